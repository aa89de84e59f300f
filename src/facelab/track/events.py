"""Enter/exit events per person and for unknown faces, as InsightFace Server 0.2's monitors define them.

InsightFace Server (``server/backend/insightface_server/services/rtsp.py``, monitor event policy
defaults in ``api/schemas.py``): a track is announced once its identity is confirmed
(``person_enter`` with the person, or ``unknown_enter``); a confirmed track whose identity changes
emits the exit of the old identity and the enter of the new one; a track not seen for
``absence_timeout_seconds`` (3.0) emits its exit; an event of the same type for the same identity
(the person id, or the track for unknown faces) within ``cooldown_seconds`` (10.0) of the previous
one is dropped; ``emit_unknown`` (on) controls the unknown events. Confirmation itself
(``confirm_frames``, 3) is counted by :class:`~facelab.track.identity.TrackIdentity`; this module
receives confirmed identities. Times are seconds of video time (frame timestamps), not wall time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from facelab.errors import ConfigError

__all__ = ["EventPolicy", "PresenceEvent", "Sighting", "PresenceMonitor"]


@dataclass(frozen=True)
class EventPolicy:
    """When to announce people (InsightFace Server's ``MonitorEventPolicy`` defaults).

    Attributes:
        absence_timeout: seconds without a sighting after which a track has left.
        cooldown: seconds during which a repeat of the same event for the same identity is dropped.
        emit_unknown: report unknown faces too.
    """

    absence_timeout: float = 3.0
    cooldown: float = 10.0
    emit_unknown: bool = True

    def __post_init__(self) -> None:
        if not self.absence_timeout > 0:
            raise ConfigError(f"EventPolicy: absence_timeout must be positive, got {self.absence_timeout}")
        if self.cooldown < 0:
            raise ConfigError(f"EventPolicy: cooldown must be >= 0, got {self.cooldown}")


@dataclass(frozen=True)
class Sighting:
    """A track seen (detected) at some time, with its confirmed identity.

    Attributes:
        track_id: the tracker's id.
        confirmed: whether the identity below is confirmed (pending tracks only keep the track alive).
        person_id: the confirmed person, or ``None`` for an unknown face.
        name: display name of the person.
        score: similarity of the match.
    """

    track_id: int
    confirmed: bool
    person_id: str | None = None
    name: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class PresenceEvent:
    """One event: ``type`` is ``person_enter``, ``person_exit``, ``unknown_enter`` or ``unknown_exit``.

    ``time`` is when the event was decided; ``last_seen`` is the last sighting of the track (for
    an exit, when the face was last there).
    """

    type: str
    time: float
    track_id: int
    person_id: str | None = None
    name: str | None = None
    score: float | None = None
    last_seen: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass
class _Presence:
    person_id: str | None
    name: str | None
    score: float | None
    last_seen: float
    entered: bool = False


class PresenceMonitor:
    """Turn per-frame sightings into enter/exit events.

    Example:
        >>> mon = PresenceMonitor()
        >>> [e.type for e in mon.update(0.0, [Sighting(1, True, "ann", "Ann", 0.9)])]
        ['person_enter']
        >>> [e.type for e in mon.update(5.0, [])]
        ['person_exit']
    """

    def __init__(self, policy: EventPolicy | None = None) -> None:
        self.policy = policy or EventPolicy()
        self._present: dict[int, _Presence] = {}
        self._last_emitted: dict[tuple[str, str], float] = {}

    def _emit(self, out: list[PresenceEvent], kind: str, time: float, track_id: int, p: _Presence) -> None:
        unknown = p.person_id is None
        if unknown and not self.policy.emit_unknown:
            return
        event_type = f"{'unknown' if unknown else 'person'}_{kind}"
        identity = f"track:{track_id}" if unknown else f"person:{p.person_id}"
        last = self._last_emitted.get((event_type, identity))
        if last is not None and self.policy.cooldown > 0 and time - last < self.policy.cooldown:
            return
        self._last_emitted[(event_type, identity)] = time
        out.append(PresenceEvent(event_type, float(time), track_id, p.person_id, p.name, p.score, float(p.last_seen)))

    def update(self, time: float, sightings: Iterable[Sighting]) -> list[PresenceEvent]:
        """Record the sightings of one frame at ``time`` seconds; returns the events it causes."""
        out: list[PresenceEvent] = []
        for s in sightings:
            p = self._present.get(s.track_id)
            if p is None:
                p = self._present[s.track_id] = _Presence(s.person_id, s.name, s.score, time)
            p.last_seen = time
            if not s.confirmed:
                continue
            if p.entered and p.person_id != s.person_id:
                self._emit(out, "exit", time, s.track_id, p)
                p.entered = False
            p.person_id, p.name, p.score = s.person_id, s.name, s.score
            if not p.entered:
                p.entered = True
                self._emit(out, "enter", time, s.track_id, p)
        out.extend(self._expire(time))
        return out

    def _expire(self, time: float) -> list[PresenceEvent]:
        out: list[PresenceEvent] = []
        for track_id in [t for t, p in self._present.items() if time - p.last_seen >= self.policy.absence_timeout]:
            p = self._present.pop(track_id)
            if p.entered:
                self._emit(out, "exit", time, track_id, p)
        return out

    def finish(self, time: float) -> list[PresenceEvent]:
        """End of the video or stream at ``time``: every announced track exits."""
        out: list[PresenceEvent] = []
        for track_id, p in sorted(self._present.items()):
            if p.entered:
                self._emit(out, "exit", time, track_id, p)
        self._present.clear()
        return out
