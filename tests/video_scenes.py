"""Synthetic test videos made from the shared photos, with ground-truth face boxes and identities per frame.

Each photo's face box is found ONCE on the full-resolution still by the open pack's dlib MMOD
detector (independent of the video code under test); a scene then places face sprites (the photo
around that box, blended with a soft ellipse) on a textured background and moves them with known
motion, so every frame's true box is the still's box pushed through the same placement. Scenes
can pan, zoom, enter and leave the frame, be occluded, and cut to another shot. Clips are encoded
with PyAV (H.264) with a real AAC audio stream (a sine wave).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

DEEPFACE = "data/verification/deepface"

#: Photos of the same people (labelled "Yes" pairs of deepface's master.csv), by a neutral label.
PEOPLE = {
    "A": ["img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg"],
    "B": ["img13.jpg", "img14.jpg", "img15.jpg"],
    "C": ["img8.jpg", "img9.jpg"],
    "D": ["img18.jpg", "img19.jpg"],
}

_GT_CACHE: dict[str, np.ndarray] = {}


def photo_face_box(photo: Path, analyzer) -> np.ndarray:
    """The largest face box of a still, by the open pack's default detector (cached per process)."""
    key = str(photo)
    if key not in _GT_CACHE:
        dets = analyzer.detect(photo)
        assert len(dets), f"no face in {photo}"
        areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
        _GT_CACHE[key] = dets.boxes[int(np.argmax(areas))].astype(np.float64)
    return _GT_CACHE[key]


Path2D = Callable[[int], "tuple[float, float, float] | None"]


@dataclass
class Actor:
    """A face in the scene: ``path(frame) -> (cx, cy, face_height)`` in pixels, or ``None`` when absent."""

    person: str
    photo: Path
    path: Path2D
    shot: int | None = None  # only drawn in this shot (None = every shot)


@dataclass
class Scene:
    """A synthetic clip.

    Attributes:
        width, height, fps, frames: the clip.
        actors: the faces.
        cuts: frames where a new shot (new background) starts.
        occluders: ``(first, last, (x1, y1, x2, y2))`` grey bars drawn over everything.
    """

    width: int
    height: int
    fps: float
    frames: int
    actors: list[Actor]
    cuts: list[int] = field(default_factory=list)
    occluders: list[tuple[int, int, tuple[int, int, int, int]]] = field(default_factory=list)

    def shot(self, frame: int) -> int:
        return sum(1 for c in self.cuts if frame >= c)


@dataclass
class GTFace:
    """One true face on one frame: ``box`` clipped to the frame; ``visible``: >= 50 % in frame and not occluded."""

    person: str
    box: np.ndarray
    full_box: np.ndarray
    visible: bool


def _grow_box(box: np.ndarray, factor: float) -> np.ndarray:
    c = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) * factor / 2
    return np.concatenate([c - half, c + half])


def _background(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.integers(40, 215, size=(6, 8, 3)).astype(np.uint8)
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=(h, w, 3))
    return np.clip(bg + noise, 0, 255).astype(np.uint8)


class _Sprite:
    def __init__(self, photo: Path, box: np.ndarray) -> None:
        from facelab.io.image import load_image

        img = load_image(photo)
        x1, y1, x2, y2 = box
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        half_w, half_h = bw, bh  # crop = the box grown 2x
        H, W = img.shape[:2]
        pad = int(max(bw, bh) * 2)
        padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        cx, cy = cx + pad, cy + pad
        self.crop = padded[int(cy - half_h) : int(cy + half_h), int(cx - half_w) : int(cx + half_w)]
        self.aspect = bw / bh  # GT box width / height
        ch, cw = self.crop.shape[:2]
        yy, xx = np.mgrid[0:ch, 0:cw]
        r = ((xx - cw / 2) / (cw / 2)) ** 2 + ((yy - ch / 2) / (ch / 2)) ** 2
        self.alpha = np.clip((1.0 - r) / 0.25, 0, 1).astype(np.float32)  # soft edge, inner box fully opaque

    def draw(self, canvas: np.ndarray, cx: float, cy: float, face_h: float) -> np.ndarray:
        """Paste with the GT box centred at (cx, cy) and face_h tall; returns the GT box."""
        s = face_h / (self.crop.shape[0] / 2)
        w, h = max(2, int(round(self.crop.shape[1] * s))), max(2, int(round(self.crop.shape[0] * s)))
        sprite = cv2.resize(self.crop, (w, h), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha, (w, h))[..., None]
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        H, W = canvas.shape[:2]
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if xb > xa and yb > ya:
            region = canvas[ya:yb, xa:xb].astype(np.float32)
            sp = sprite[ya - y0 : yb - y0, xa - x0 : xb - x0].astype(np.float32)
            al = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0]
            canvas[ya:yb, xa:xb] = (al * sp + (1 - al) * region).astype(np.uint8)
        # the GT box is the centre half of the sprite (the crop was the box grown 2x)
        fx0, fy0 = x0 + w / 4, y0 + h / 4
        return np.array([fx0, fy0, fx0 + w / 2, fy0 + h / 2])


def render(scene: Scene, analyzer, _unused=None) -> tuple[list[np.ndarray], list[list[GTFace]]]:
    """Draw every frame; returns ``(frames BGR, ground truth per frame)``."""
    sprites = {}
    for a in scene.actors:
        if a.photo not in sprites:
            sprites[a.photo] = _Sprite(a.photo, photo_face_box(a.photo, analyzer))
    backgrounds = {}
    frames, truth = [], []
    for f in range(scene.frames):
        shot = scene.shot(f)
        if shot not in backgrounds:
            backgrounds[shot] = _background(scene.width, scene.height, 100 + 17 * shot)
        canvas = backgrounds[shot].copy()
        gt = []
        for a in scene.actors:
            if a.shot is not None and a.shot != shot:
                continue
            where = a.path(f)
            if where is None:
                continue
            full = sprites[a.photo].draw(canvas, *where)
            gt.append((a.person, full))
        for first, last, rect in scene.occluders:
            if first <= f <= last:
                x1, y1, x2, y2 = rect
                canvas[y1:y2, x1:x2] = (90, 90, 90)
        faces = []
        for person, full in gt:
            clipped = np.clip(full, 0, [scene.width, scene.height, scene.width, scene.height])
            area = (full[2] - full[0]) * (full[3] - full[1])
            inside = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
            occluded = 0.0
            later = [g for g in gt[[p for p, _ in gt].index(person) + 1 :]]
            for _, other in later:  # faces drawn after this one cover it (sprite ~ 1.5x its box)
                o = _grow_box(other, 1.5)
                ox = max(0.0, min(o[2], clipped[2]) - max(o[0], clipped[0]))
                oy = max(0.0, min(o[3], clipped[3]) - max(o[1], clipped[1]))
                occluded = max(occluded, ox * oy / max(inside, 1e-6))
            for first, last, rect in scene.occluders:
                if first <= f <= last:
                    ox = max(0.0, min(rect[2], clipped[2]) - max(rect[0], clipped[0]))
                    oy = max(0.0, min(rect[3], clipped[3]) - max(rect[1], clipped[1]))
                    occluded = max(occluded, ox * oy / max(inside, 1e-6))
            faces.append(GTFace(person, clipped, full, inside >= 0.5 * area and occluded < 0.5))
        frames.append(canvas)
        truth.append(faces)
    return frames, truth


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: float,
    *,
    audio: bool = True,
    vfr: bool = False,
    sample_rate: int = 44100,
    rotation: int = 0,
) -> list[float]:
    """Encode frames as H.264 (+ an AAC sine tone); returns each frame's time in seconds.

    ``vfr`` gives frames alternating durations of 0.6 and 1.4 frame periods (time base 1/1000).
    ``rotation`` is the display rotation written into the stream (degrees counter-clockwise, as
    ``VideoStream.set_display_rotation``; a phone held upright writes -90).
    """
    import av

    out = av.open(str(path), "w")
    rate = Fraction(fps).limit_denominator(1001)
    vs = out.add_stream("libx264", rate=rate)
    vs.height, vs.width = frames[0].shape[:2]
    vs.pix_fmt = "yuv420p"
    vs.codec_context.options = {"crf": "18", "preset": "veryfast"}
    if rotation:
        vs.set_display_rotation(rotation)
    tb = Fraction(1, 1000) if vfr else Fraction(1, int(round(fps * 1000)))
    vs.codec_context.time_base = tb
    aout = out.add_stream("aac", rate=sample_rate, layout="mono") if audio else None
    times, t = [], 0.0
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.time_base = tb
        if vfr:
            frame.pts = int(round(t * 1000))
            t += (0.6 if i % 2 == 0 else 1.4) / fps
        else:
            frame.pts = i * 1000
        times.append(float(frame.pts * tb))
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if aout is not None:
        n = int(len(frames) / fps * sample_rate)
        t = np.arange(n) / sample_rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for k in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[None, k : k + 1024]), format="fltp", layout="mono"
            )
            af.sample_rate = sample_rate
            af.pts = k
            for p in aout.encode(af):
                out.mux(p)
        for p in aout.encode():
            out.mux(p)
    out.close()
    return times


def write_audio_only(path: Path, sample_rate: int = 16000, seconds: float = 1.0) -> Path:
    """An AAC file with one second of mono silence and no video stream (a bad input for the video readers)."""
    import av

    c = av.open(str(path), "w")
    a = c.add_stream("aac", rate=sample_rate, layout="mono")
    for k in range(0, int(sample_rate * seconds), 1024):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = sample_rate, k
        for p in a.encode(f):
            c.mux(p)
    for p in a.encode():
        c.mux(p)
    c.close()
    return path


def linear(f0: int, f1: int, a: tuple[float, float, float], b: tuple[float, float, float]) -> Path2D:
    """Move from ``a`` at frame ``f0`` to ``b`` at ``f1`` (absent outside)."""

    def path(f: int):
        if f < f0 or f > f1:
            return None
        t = (f - f0) / max(1, f1 - f0)
        return tuple((1 - t) * x + t * y for x, y in zip(a, b))

    return path


def decode_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as BGR arrays (PyAV)."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def covered_fraction(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], tol: float = 60.0) -> float:
    """Fraction of the pixels inside ``box`` within ``tol`` (Euclidean, BGR) of ``colour``."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    region = image[max(0, y1) : y2, max(0, x1) : x2].astype(np.float32)
    if region.size == 0:
        return 1.0
    dist = np.linalg.norm(region - np.asarray(colour, np.float32), axis=2)
    return float((dist <= tol).mean())


def leaked_frames(
    frames: list[np.ndarray], truth: list[list[GTFace]], colour: tuple[int, int, int], *, need: float = 0.95
) -> list[tuple[int, str, float]]:
    """``(frame, person, covered fraction)`` of every visible true face less than ``need`` covered."""
    out = []
    for i, (image, faces) in enumerate(zip(frames, truth)):
        for face in faces:
            if face.visible:
                c = covered_fraction(image, face.box, colour)
                if c < need:
                    out.append((i, face.person, round(c, 3)))
    return out


_HOME: list[Path] = []
_ANALYZERS: dict[tuple, object] = {}
YUNET = "models/yunet/face_detection_yunet_2026may.onnx"


def video_home() -> Path:
    """One FACELAB_HOME with the open pack built, shared by the video tests of this process."""
    if not _HOME:
        import tempfile

        from cli_helpers import open_pack_or_skip

        home = Path(tempfile.mkdtemp(prefix="facelab-video-home-"))
        open_pack_or_skip(home)
        _HOME.append(home)
    return _HOME[0]


def analyzer(detector: str = "yunet", modules: tuple[str, ...] | None = None):
    """A cached ``FaceAnalyzer``: the open pack, with YuNet (``../shared``) or its own MMOD detector."""
    from facelab.pipeline import FaceAnalyzer
    from shared_data import shared_file

    key = (detector, modules)
    if key not in _ANALYZERS:
        extra = {"detector": shared_file(YUNET)} if detector == "yunet" else {}
        _ANALYZERS[key] = FaceAnalyzer("open", home=video_home(), modules=list(modules) if modules else None, **extra)
    return _ANALYZERS[key]


def gt_analyzer():
    """The detector that defines the ground truth on the stills: the open pack's default detector (MTCNN + MMOD)."""
    return analyzer("open", ("detection",))


def photo(person: str, k: int = 0) -> Path:
    """The ``k``-th photo of a person of :data:`PEOPLE` under ``../shared``."""
    from shared_data import shared_file

    return shared_file(f"{DEEPFACE}/{PEOPLE[person][k]}")


# -- the scenes of the tests and the benchmark (sizes scale with the frame) ---------------------------


def walk_scene(width: int = 480, height: int = 270, fps: float = 12.0, seconds: float = 3.0) -> Scene:
    """A pans right and zooms in, leaving through the right edge; B enters from the right at 1/4 and crosses."""
    n = int(round(fps * seconds))
    u = height / 270.0
    return Scene(
        width,
        height,
        fps,
        n,
        [
            Actor("A", photo("A"), linear(0, n - 1, (100 * u, 90 * u, 70 * u), (width - 40 * u, 70 * u, 95 * u))),
            Actor(
                "B", photo("B"), linear(n // 4, n - 1, (width + 40 * u, 200 * u, 60 * u), (230 * u, 205 * u, 62 * u))
            ),
        ],
    )


def occlusion_scene(width: int = 480, height: int = 270, fps: float = 12.0, seconds: float = 3.0) -> Scene:
    """A walks slowly and is hidden by a grey bar for 5 frames in the middle; B stays on the right."""
    n = int(round(fps * seconds))
    u = height / 270.0
    mid = n // 2
    cx = 150 * u + 40 * u * (mid / (n - 1))
    bar = (int(cx - 70 * u), int(40 * u), int(cx + 70 * u), int(230 * u))
    return Scene(
        width,
        height,
        fps,
        n,
        [
            Actor("A", photo("A"), linear(0, n - 1, (150 * u, 130 * u, 80 * u), (190 * u, 130 * u, 80 * u))),
            Actor("B", photo("B"), linear(0, n - 1, (380 * u, 140 * u, 70 * u), (370 * u, 140 * u, 70 * u))),
        ],
        occluders=[(mid - 2, mid + 2, bar)],
    )


def cut_scene(width: int = 480, height: int = 270, fps: float = 12.0, seconds: float = 3.0) -> Scene:
    """Shot 1: A; a cut half-way to shot 2: B at nearly the same place on another background."""
    n = int(round(fps * seconds))
    u = height / 270.0
    cut = n // 2
    return Scene(
        width,
        height,
        fps,
        n,
        [
            Actor("A", photo("A"), linear(0, cut - 1, (200 * u, 130 * u, 80 * u), (230 * u, 130 * u, 80 * u)), shot=0),
            Actor("B", photo("B"), linear(cut, n - 1, (235 * u, 135 * u, 80 * u), (260 * u, 135 * u, 80 * u)), shot=1),
        ],
        cuts=[cut],
    )


def pair_scene(width: int = 480, height: int = 270, fps: float = 12.0, seconds: float = 2.0) -> Scene:
    """A on the left and B on the right the whole time, drifting slowly (for --except / --only)."""
    n = int(round(fps * seconds))
    u = height / 270.0
    return Scene(
        width,
        height,
        fps,
        n,
        [
            Actor("A", photo("A"), linear(0, n - 1, (120 * u, 130 * u, 85 * u), (150 * u, 125 * u, 85 * u))),
            Actor("B", photo("B"), linear(0, n - 1, (360 * u, 140 * u, 80 * u), (340 * u, 145 * u, 80 * u))),
        ],
    )


_CLIPS: dict[tuple, tuple[Path, list[np.ndarray], list[list[GTFace]]]] = {}


def make_clip(name: str, folder: Path, **kwargs) -> tuple[Path, list[np.ndarray], list[list[GTFace]]]:
    """Render and encode a scene once per process: ``(path, source frames, ground truth)``."""
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CLIPS:
        scene = {"walk": walk_scene, "occlusion": occlusion_scene, "cut": cut_scene, "pair": pair_scene}[name](**kwargs)
        frames, truth = render(scene, gt_analyzer(), None)
        path = folder / f"{name}_{scene.width}x{scene.height}.mp4"
        write_clip(path, frames, scene.fps)
        _CLIPS[key] = (path, decode_frames(path), truth)
    return _CLIPS[key]
