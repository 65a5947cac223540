import numpy as np
import pytest

from engine.edit.session import EditSession, Recipe, SessionError
from engine.jobs import Cancelled, CancelToken


def test_apply_strength_blend_and_no_rerun(fake_restorer, photo):
    s = EditSession(photo)
    plan = s.apply("remove the noise", fake_restorer)
    assert [p.intent for p in plan] == ["noise"]
    full = photo * 0.5 + 0.25
    assert np.allclose(s.result(), full, atol=1e-6)
    calls = fake_restorer.calls
    s.set_strength(0, 0.25)
    assert np.allclose(s.result(), photo + 0.25 * (full - photo), atol=1e-6)
    assert fake_restorer.calls == calls  # re-blend only


def test_compound_instruction_gives_ordered_steps_one_undo(fake_restorer, photo):
    s = EditSession(photo)
    plan = s.apply("remove the noise and then brighten it a bit. hello", fake_restorer)
    assert [p.actionable for p in plan] == [True, True, False]
    assert [st.intent for st in s.steps] == ["noise", "low-light"]
    assert s.steps[1].strength == 0.5
    s.undo()
    assert s.steps == [] and np.array_equal(s.result(), photo)
    s.redo()
    assert len(s.steps) == 2


def test_changing_an_early_step_marks_later_stale_then_refresh_is_exact(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("remove the noise", fake_restorer)
    s.apply("brighten it", fake_restorer)
    s.set_strength(0, 0.5)
    assert s.steps[1].stale and s.stale
    preview = s.result().copy()
    s.refresh(fake_restorer)
    assert not s.stale
    mid = photo + 0.5 * ((photo * 0.5 + 0.25) - photo)
    exact = np.clip(mid * 1.5 + 0.05, 0, 1)
    assert np.allclose(s.result(), exact, atol=1e-6)
    assert not np.allclose(preview, exact)


def test_undo_redo_covers_strength_changes(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("remove the noise", fake_restorer)
    s.set_strength(0, 0.3)
    s.set_strength(0, 0.4, merge=True)  # slider drag folds into one entry
    s.undo()
    assert s.steps[0].strength == 1.0
    s.redo()
    assert s.steps[0].strength == 0.4
    assert not s.can_redo


def test_no_op_instruction_changes_nothing(fake_restorer, photo):
    s = EditSession(photo)
    plan = s.apply("hello there", fake_restorer)
    assert not plan[0].actionable and plan[0].message
    assert s.steps == [] and not s.can_undo


def test_cancel_adds_nothing(photo):
    from conftest import FakeRestorer

    token = CancelToken()
    token.cancel()
    s = EditSession(photo)
    with pytest.raises(Cancelled):
        s.apply("remove the noise", FakeRestorer(), cancel=token)
    assert s.steps == [] and not s.can_undo


def test_recipe_round_trip_and_replay(fake_restorer, photo, tmp_path):
    s = EditSession(photo)
    s.apply("remove the noise and then brighten it a bit", fake_restorer)
    path = s.to_recipe().save(tmp_path / "r.json")
    recipe = Recipe.load(path)
    assert recipe.steps == [("remove the noise", 1.0), ("brighten it a bit", 0.5)]
    replayed = EditSession.replay(recipe, photo, fake_restorer)
    assert np.allclose(replayed.result(), s.result(), atol=1e-6)


def test_bad_recipe_files(tmp_path):
    (tmp_path / "x.json").write_text('{"steps": []}')
    with pytest.raises(SessionError):
        Recipe.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(SessionError):
        Recipe.load(tmp_path / "y.json")


def test_session_file_is_lossless(fake_restorer, photo, tmp_path):
    s = EditSession(photo)
    s.apply("remove the noise and then brighten it", fake_restorer)
    s.set_strength(1, 0.7)
    path = s.save(tmp_path / "edit.irsession")
    t = EditSession.load(path)
    assert np.array_equal(t.original, s.original)
    assert [x.meta() for x in t.steps] == [x.meta() for x in s.steps]
    assert np.array_equal(t.result(), s.result())
    (tmp_path / "bad.irsession").write_bytes(b"garbage")
    with pytest.raises(SessionError):
        EditSession.load(tmp_path / "bad.irsession")
