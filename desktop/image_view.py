"""The photo: zoom (fit, 100 %, wheel), pan, and a before/after split that is dragged like a curtain.

Two pixmaps, "before" (the original) and "after" (the current result), are
painted by one scene item; the split line and its labels are drawn on top in
screen space so they stay crisp at any zoom. Holding the compare key shows the
original whole.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsView

MIN_ZOOM, MAX_ZOOM = 0.02, 32.0
HANDLE_GRAB = 10  # pixels either side of the split line that grab it


class CompareItem(QGraphicsItem):
    """Paints "after", and "before" left of the split (or whole while comparing)."""

    def __init__(self) -> None:
        super().__init__()
        self.before: QPixmap | None = None
        self.after: QPixmap | None = None
        self.split: float | None = None
        self.show_before = False

    def size(self) -> tuple[float, float]:
        pix = self.after or self.before
        return (float(pix.width()), float(pix.height())) if pix else (0.0, 0.0)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt's name
        w, h = self.size()
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        w, h = self.size()
        if not w:
            return
        scale = option.levelOfDetailFromTransform(painter.worldTransform())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 2.0)
        target = QRectF(0, 0, w, h)
        before, after = self.before or self.after, self.after or self.before
        if self.show_before:
            painter.drawPixmap(target, before, QRectF(before.rect()))
            return
        painter.drawPixmap(target, after, QRectF(after.rect()))
        if self.split is not None and before is not after:
            x = w * self.split
            src = QRectF(0, 0, before.width() * self.split, before.height())
            painter.drawPixmap(QRectF(0, 0, x, h), before, src)


class ImageView(QGraphicsView):
    """Zoomable, pannable view of the document with an optional before/after split."""

    zoomChanged = Signal(float)
    splitChanged = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.item = CompareItem()
        self.scene().addItem(self.item)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setBackgroundBrush(QBrush(QColor("#1b1b1b")))
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self._fit = True
        self._split = 0.5
        self._compare = False
        self._dragging_split = False
        self._keys: list[int | None] = [None, None]

    # --- content --------------------------------------------------------------

    @property
    def has_image(self) -> bool:
        return self.item.after is not None or self.item.before is not None

    def set_images(self, before: QImage | None, after: QImage | None, *, reset_view: bool = False) -> None:
        """Show ``before``/``after``; unchanged images (same cacheKey) are not converted again."""
        old_size = self.item.size()
        centre = self.mapToScene(self.viewport().rect().center())
        self.item.prepareGeometryChange()
        self.item.before, self._keys[0] = self._pixmap(before, self.item.before, self._keys[0])
        self.item.after, self._keys[1] = self._pixmap(after, self.item.after, self._keys[1])
        self.scene().setSceneRect(self.item.boundingRect())
        new_size = self.item.size()
        if reset_view or not old_size[0] or not new_size[0]:
            self._fit = True
        elif new_size != old_size and not self._fit:
            # An up-sampling step (or its undo) changed the pixel size: keep the same part of the photo at
            # the same size on screen, so before/after and undo/redo can be compared without the view jumping.
            ratio = new_size[0] / old_size[0]
            self.scale(1 / ratio, 1 / ratio)
            self.centerOn(QPointF(centre.x() * ratio, centre.y() * new_size[1] / old_size[1]))
            self.zoomChanged.emit(self.zoom())
        if self._fit:
            self.fit_to_window()
        self.item.update()
        self.viewport().update()

    @staticmethod
    def _pixmap(image: QImage | None, current: QPixmap | None, key: int | None) -> tuple[QPixmap | None, int | None]:
        if image is None or image.isNull():
            return None, None
        if current is not None and key == image.cacheKey():
            return current, key
        return QPixmap.fromImage(image), image.cacheKey()

    def clear(self) -> None:
        self.set_images(None, None, reset_view=True)

    # --- zoom -----------------------------------------------------------------

    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float) -> None:
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        factor = zoom / self.zoom()
        self.scale(factor, factor)
        self.zoomChanged.emit(self.zoom())

    def zoom_by(self, factor: float) -> None:
        self._fit = False
        self.set_zoom(self.zoom() * factor)

    def zoom_in(self) -> None:
        self.zoom_by(1.25)

    def zoom_out(self) -> None:
        self.zoom_by(1 / 1.25)

    def actual_size(self) -> None:
        """100 %: one image pixel per screen pixel, the view for judging noise and sharpness."""
        self._fit = False
        self.set_zoom(1.0)
        self.centerOn(self.item.boundingRect().center())

    def fit_to_window(self) -> None:
        self._fit = True
        if self.has_image:
            self.resetTransform()
            self.fitInView(self.item.boundingRect().adjusted(-8, -8, 8, 8), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoomChanged.emit(self.zoom())

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self.has_image:
            return
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta:
            self.zoom_by(1.0015 ** delta)
        event.accept()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self._fit:
            self.fit_to_window()

    # --- before / after -------------------------------------------------------------

    @property
    def compare(self) -> bool:
        return self._compare

    def set_compare(self, on: bool) -> None:
        self._compare = bool(on)
        self.item.split = self._split if on else None
        self.item.update()
        self.viewport().update()

    @property
    def split(self) -> float:
        return self._split

    def set_split(self, fraction: float) -> None:
        self._split = max(0.0, min(1.0, float(fraction)))
        if self._compare:
            self.item.split = self._split
            self.item.update()
            self.viewport().update()
        self.splitChanged.emit(self._split)

    def set_show_before(self, on: bool) -> None:
        """Hold-to-compare: the original, whole, while the key is down."""
        if self.item.show_before != on:
            self.item.show_before = on
            self.item.update()
            self.viewport().update()

    @property
    def showing_before(self) -> bool:
        return self.item.show_before

    def _split_x(self) -> float:
        w, _ = self.item.size()
        return self.mapFromScene(QPointF(w * self._split, 0)).x()

    def _near_split(self, x: float) -> bool:
        return self._compare and self.has_image and abs(x - self._split_x()) <= HANDLE_GRAB

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.MouseButton.LeftButton and self._near_split(event.position().x()):
            self._dragging_split = True
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._dragging_split:
            w, _ = self.item.size()
            scene_x = self.mapToScene(event.position().toPoint()).x()
            self.set_split(scene_x / w if w else 0.5)
            event.accept()
            return
        if self._near_split(event.position().x()):
            self.viewport().setCursor(Qt.CursorShape.SplitHCursor)
        elif self.dragMode() == QGraphicsView.DragMode.ScrollHandDrag:
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._dragging_split:
            self._dragging_split = False
            event.accept()
            return
        super().mouseReleaseEvent(event)

    # --- overlay --------------------------------------------------------------

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt's name
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        vp = self.viewport().rect()
        if not self.has_image:
            self._draw_empty(painter, vp)
        elif self.item.show_before:
            self._tag(painter, "BEFORE  ·  original", vp.center().x(), 14, centre=True)
        elif self._compare:
            self._draw_split(painter, vp)
        painter.restore()

    def _draw_empty(self, painter: QPainter, vp) -> None:
        painter.setPen(QColor("#8a8a8a"))
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 1.5)
        painter.setFont(font)
        painter.drawText(QRectF(vp).adjusted(0, -30, 0, -30), Qt.AlignmentFlag.AlignCenter, "Open a photo to begin")
        font.setPointSizeF(self.font().pointSizeF())
        painter.setFont(font)
        painter.setPen(QColor("#6c6c6c"))
        painter.drawText(QRectF(vp).adjusted(0, 20, 0, 20), Qt.AlignmentFlag.AlignCenter,
                         "Ctrl+O, drag a file here, or File → Open Recent")

    def _draw_split(self, painter: QPainter, vp) -> None:
        w, h = self.item.size()
        top = max(vp.top(), self.mapFromScene(QPointF(0, 0)).y())
        bottom = min(vp.bottom(), self.mapFromScene(QPointF(0, h)).y())
        x = self._split_x()
        painter.setPen(QPen(QColor(255, 255, 255, 220), 1.5))
        painter.drawLine(QPointF(x, top), QPointF(x, bottom))
        cy = (top + bottom) / 2
        painter.setBrush(QColor(30, 30, 30, 210))
        painter.setPen(QPen(QColor(255, 255, 255, 230), 1.5))
        painter.drawEllipse(QPointF(x, cy), 14, 14)
        painter.setBrush(QColor(255, 255, 255, 230))
        painter.setPen(Qt.PenStyle.NoPen)
        for sign in (-1, 1):
            arrow = QPainterPath()
            arrow.moveTo(x + sign * 9, cy)
            arrow.lineTo(x + sign * 3, cy - 5)
            arrow.lineTo(x + sign * 3, cy + 5)
            arrow.closeSubpath()
            painter.drawPath(arrow)
        self._tag(painter, "BEFORE", x - 10, top + 10, right=True)
        self._tag(painter, "AFTER", x + 10, top + 10)

    def _tag(self, painter: QPainter, text: str, x: float, y: float, *, right: bool = False,
             centre: bool = False) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF() * 0.85))
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        tw, th = metrics.horizontalAdvance(text) + 14, metrics.height() + 6
        left = x - tw / 2 if centre else (x - tw if right else x)
        box = QRectF(left, y, tw, th)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(20, 20, 20, 190))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor("#f0f0f0"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
