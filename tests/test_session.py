import numpy as np
import pytest

from engine.edit.recipes import Recipe, RecipeStep
from engine.edit.runners import Runners, RunnerUnavailableError
from engine.edit.session import EditSession, NothingToDoError, SessionError, SpireOptions, StepKind
from engine.edit.steps import render
from engine.edit.upsampling import ResultTooLargeError, resample
from engine.jobs import Cancelled, CancelToken

#: A step keeps its correction in half precision (engine.edit.runners.CORRECTION_DTYPE): results agree with
#: the exact blend to within half a float16 step at 1.0, far below an 8-bit level and the network's own bf16.
HALF = 2.0**-11


def test_apply_strength_blend_and_no_rerun(fake_restorer, photo):
    s = EditSession(photo)
    plan = s.apply("remove the noise", fake_restorer)
    assert [p.intent for p in plan] == ["noise"]
    full = photo * 0.5 + 0.25
    assert np.allclose(s.result(), full, atol=HALF)
    calls = fake_restorer.calls
    s.set_strength(0, 0.25)
    assert np.allclose(s.result(), photo + 0.25 * (full - photo), atol=HALF)
    assert fake_restorer.calls == calls  # re-blend only


def test_compound_instruction_gives_ordered_steps(fake_restorer, photo):
    s = EditSession(photo)
    plan = s.apply("remove the noise and then brighten it a bit", fake_restorer)
    assert [p.actionable for p in plan] == [True, True]
    assert [st.intent for st in s.steps] == ["noise", "low-light"]
    assert s.steps[1].strength == 0.5
    assert fake_restorer.calls == 2


def test_strength_override_and_scale_run_each_step_once(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("remove the noise and then brighten it", fake_restorer, strength=0.4)
    assert fake_restorer.calls == 2  # the strength is set before running: no refresh of the later step
    assert [st.strength for st in s.steps] == [0.4, 0.4] and not s.stale
    mid = photo + 0.4 * ((photo * 0.5 + 0.25) - photo)
    exact = mid + 0.4 * (np.clip(mid * 1.5 + 0.05, 0, 1) - mid)
    assert np.allclose(s.result(), exact, atol=HALF)
    t = EditSession(photo)
    t.apply("remove the noise and then brighten it a bit", fake_restorer, scale=0.5)
    assert [st.strength for st in t.steps] == [0.5, 0.25]


def test_changing_an_early_step_marks_later_stale_then_refresh_is_exact(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("remove the noise", fake_restorer)
    s.apply("brighten it", fake_restorer)
    s.set_strength(0, 0.5)
    assert s.steps[1].stale and s.stale and s.stale_kinds() == {StepKind.INSTRUCTIR}
    preview = s.result().copy()
    s.refresh(fake_restorer)
    assert not s.stale
    mid = photo + 0.5 * ((photo * 0.5 + 0.25) - photo)
    exact = np.clip(mid * 1.5 + 0.05, 0, 1)
    assert np.allclose(s.result(), exact, atol=HALF)
    assert not np.allclose(preview, exact)


def test_set_steps_swaps_snapshots_for_a_front_ends_undo(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("remove the noise", fake_restorer)
    before = list(s.steps)
    s.set_strength(0, 0.3)
    s.set_steps(before)
    assert s.steps[0].strength == 1.0
    assert np.allclose(s.result(), photo * 0.5 + 0.25, atol=HALF)
    clone = s.clone()
    clone.set_strength(0, 0.1)
    assert s.steps[0].strength == 1.0 and clone.steps[0].delta is s.steps[0].delta


def test_no_op_instruction_raises_nothing_to_do_and_changes_nothing(fake_restorer, photo):
    s = EditSession(photo)
    with pytest.raises(NothingToDoError, match="not a restoration request") as info:
        s.apply("hello there", fake_restorer)
    assert not info.value.plan[0].actionable and info.value.code == "nothing-to-do"
    assert s.steps == [] and fake_restorer.calls == 0


def test_cancel_adds_nothing(photo):
    from conftest import FakeRestorer

    token = CancelToken()
    token.cancel()
    s = EditSession(photo)
    with pytest.raises(Cancelled):
        s.apply("remove the noise", FakeRestorer(), cancel=token)
    assert s.steps == []


def test_progress_is_monotonic_and_weighted_by_pixels(fake_restorer, photo):
    seen = []
    s = EditSession(photo)
    s.apply("remove the noise and then upscale it 2x", fake_restorer, progress=lambda d, n: seen.append(d / n))
    assert seen == sorted(seen) and seen[-1] == 1.0
    # the 2x step has 4x the pixels of the first: the first step ends at a fifth of the bar
    assert any(abs(v - 0.2) < 1e-3 for v in seen)


def test_recipe_round_trip_and_replay(fake_restorer, photo, tmp_path):
    s = EditSession(photo)
    s.apply("remove the noise and then brighten it a bit", fake_restorer)
    path = s.to_recipe().save(tmp_path / "r.json")
    recipe = Recipe.load(path)
    assert [(r.instruction, r.strength, r.kind) for r in recipe.steps] == [
        ("remove the noise", 1.0, StepKind.INSTRUCTIR), ("brighten it a bit", 0.5, StepKind.INSTRUCTIR)]
    replayed = EditSession.replay(recipe, photo, fake_restorer)
    assert np.allclose(replayed.result(), s.result(), atol=1e-6)


def test_version_1_recipes_still_load(tmp_path):
    (tmp_path / "v1.json").write_text('{"format": "instructir-recipe", "version": 1, "model": "m", '
                                      '"steps": [{"instruction": "remove the noise", "strength": 0.5}]}')
    assert Recipe.load(tmp_path / "v1.json").steps == [RecipeStep("remove the noise", 0.5)]


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
    path = s.save(tmp_path / "edit.irsession", extras={"front/x.txt": b"kept"})
    t = EditSession.load(path)
    assert np.array_equal(t.original, s.original)
    assert [x.meta() for x in t.steps] == [x.meta() for x in s.steps]
    assert np.array_equal(t.result(), s.result())
    assert EditSession.read_extras(path, "front/") == {"front/x.txt": b"kept"}
    (tmp_path / "bad.irsession").write_bytes(b"garbage")
    with pytest.raises(SessionError):
        EditSession.load(tmp_path / "bad.irsession")


# --- the resizing up-sampling step ----------------------------------------------------------------


def test_upscale_step_doubles_the_size_and_refines_the_resample(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("upscale it 2x", fake_restorer)
    step = s.steps[0]
    assert step.kind is StepKind.UPSAMPLE and step.params == {"factor": 2.0}
    h, w = photo.shape[:2]
    assert s.result().shape == (2 * h, 2 * w, 3) and s.size_after() == (2 * h, 2 * w)
    base = resample(photo, (2 * h, 2 * w))
    assert np.allclose(s.result(), np.clip(base * 1.1 - 0.05, 0, 1), atol=HALF)
    s.set_strength(0, 0.0)  # strength blends the refinement with the plain resample
    assert np.allclose(s.result(), base, atol=1e-6)


def test_steps_before_run_small_and_after_run_large_and_survive_changes(fake_restorer, photo, tmp_path):
    s = EditSession(photo)
    s.apply("remove the noise, then upscale it 4x, then brighten it", fake_restorer)
    h, w = photo.shape[:2]
    kinds = [st.kind for st in s.steps]
    assert kinds == [StepKind.INSTRUCTIR, StepKind.UPSAMPLE, StepKind.INSTRUCTIR]
    assert s.steps[0].delta.shape == (h, w, 3) and s.steps[2].delta.shape == (4 * h, 4 * w, 3)
    exact_before = s.result().copy()
    s.set_strength(0, 0.5)
    assert s.steps[1].stale and s.steps[2].stale
    assert s.result().shape == (4 * h, 4 * w, 3)  # the preview follows the new size
    s.refresh(fake_restorer)
    mid = photo + 0.5 * ((photo * 0.5 + 0.25) - photo)
    big = np.clip(resample(mid, (4 * h, 4 * w)) * 1.1 - 0.05, 0, 1)
    assert np.allclose(s.result(), np.clip(big * 1.5 + 0.05, 0, 1), atol=HALF)
    assert not np.allclose(s.result(), exact_before)
    t = EditSession.load(s.save(tmp_path / "big.irsession"))
    assert t.steps[1].kind is StepKind.UPSAMPLE and np.array_equal(t.result(), s.result())
    replayed = EditSession.replay(Recipe.load(s.to_recipe().save(tmp_path / "r.json")), photo, fake_restorer)
    assert replayed.result().shape == (4 * h, 4 * w, 3)
    assert np.allclose(replayed.result(), s.result(), atol=1e-5)


def test_removing_the_upscale_step_brings_the_size_back(fake_restorer, photo):
    s = EditSession(photo)
    s.apply("upscale it 2x and then brighten it", fake_restorer)
    s.remove_step(0)
    assert s.steps[0].stale and s.result().shape == photo.shape  # previewed at the old size
    s.refresh(fake_restorer)
    assert np.allclose(s.result(), np.clip(photo * 1.5 + 0.05, 0, 1), atol=HALF)


def test_results_over_the_limit_are_refused_before_running(fake_restorer, photo):
    s = EditSession(photo, max_result_pixels=photo.shape[0] * photo.shape[1] * 3)
    with pytest.raises(ResultTooLargeError, match=r"128 x 96 px"):
        s.apply("remove the noise and upscale it 2x", fake_restorer)
    assert fake_restorer.calls == 0 and s.steps == []


def test_render_keeps_same_size_steps_unchanged_without_a_delta(photo):
    from engine.edit.steps import Step

    assert render(Step("x", "noise", 1.0, 1.0, "m"), photo) is photo


# --- SPIRE steps are steps like the others ---------------------------------------------------------------


class FakeSpire:
    def __init__(self) -> None:
        self.calls = []

    def restore(self, image, prompt, semantic, *, steps, guidance, upscale, seed, progress=None, cancel=None):
        self.calls.append((prompt, semantic, steps, guidance, upscale, seed))
        return np.clip(image * 0.8 + 0.1, 0, 1)


def test_spire_step_runs_recomputes_and_needs_its_pipeline(fake_restorer, photo):
    spire = FakeSpire()
    s = EditSession(photo)
    s.apply("remove the noise", fake_restorer)
    s.apply("denoise strongly", Runners(fake_restorer, spire), mode=StepKind.SPIRE,
            spire=SpireOptions(semantic="a  cat", sampling_steps=4))
    step = s.steps[1]
    assert step.kind is StepKind.SPIRE and step.params["prompt"].startswith("Denoise with sigma")
    assert spire.calls[0][1:] == ("a cat", 4, 5.0, False, 0)
    s.set_strength(0, 0.5)
    with pytest.raises(RunnerUnavailableError, match="SPIRE"):
        s.refresh(fake_restorer)
    s.refresh(Runners(fake_restorer, spire))
    assert len(spire.calls) == 2 and not s.stale
    assert [r.kind for r in s.to_recipe().steps] == [StepKind.INSTRUCTIR]  # batch cannot replay SPIRE
