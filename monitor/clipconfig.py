"""The evidence clips' part of the configuration (``[defaults]``, each camera, ``[clips]``).

Kept apart from :mod:`monitor.config` so the settings tree only mixes these fields in:
:class:`ClipDefaults` into ``[defaults]``, :class:`ClipOverrides` into every ``[[cameras]]``
table, :class:`ClipsConfig` as the ``[clips]`` section. :func:`clip_problems` is the check
across them (backend, evidence store, caps), :func:`clip_settings` what applies to one camera.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class ClipDefaults(BaseModel):
    """Evidence clip settings every camera inherits (fields of ``[defaults]``)."""

    model_config = ConfigDict(extra="forbid")

    clip: bool | None = Field(
        default=None, description="Evidence clips: keep the last seconds of the stream's "
        "compressed packets and write an MP4 around each alert's start. Default: on for "
        'cameras read with backend = "pyav" (the reader sees packets), off for opencv.')
    clip_pre_roll_s: float = Field(
        default=5.0, gt=0, le=60,
        description="Seconds of video before the frame that raised the alert.")
    clip_post_roll_s: float = Field(
        default=5.0, ge=0, le=120, description="Seconds of video after it.")
    clip_max_bytes: int = Field(
        default=16 * MIB, ge=MIB // 4, le=1024 * MIB,
        description="Memory cap of one camera's packet ring, bytes (about 5 s of a 4 Mbit/s "
        "camera take 2.5 MB; a GOP that does not fit is not kept).")


class ClipOverrides(BaseModel):
    """Per-camera overrides of :class:`ClipDefaults` (fields of ``[[cameras]]``)."""

    model_config = ConfigDict(extra="forbid")

    clip: bool | None = Field(default=None, description="Overrides defaults.clip.")
    clip_pre_roll_s: float | None = Field(default=None, gt=0, le=60,
                                          description="Overrides defaults.clip_pre_roll_s.")
    clip_post_roll_s: float | None = Field(default=None, ge=0, le=120,
                                           description="Overrides defaults.clip_post_roll_s.")
    clip_max_bytes: int | None = Field(default=None, ge=MIB // 4, le=1024 * MIB,
                                       description="Overrides defaults.clip_max_bytes.")


class ClipsConfig(BaseModel):
    """Evidence clips across all cameras (the ``[clips]`` section)."""

    model_config = ConfigDict(extra="forbid")

    max_total_bytes: int = Field(
        default=256 * MIB, ge=MIB, description="Memory cap of all cameras' packet rings "
        "together, bytes; over it, the ring that grows gives up its oldest seconds.")


@dataclass(frozen=True, slots=True)
class ClipSettings:
    """What applies to one camera whose clips are on."""

    pre_roll_s: float
    post_roll_s: float
    max_bytes: int


def clip_settings(defaults: ClipDefaults, camera: ClipOverrides, backend: str,
                  snapshots_enabled: bool) -> ClipSettings | None:
    """The camera's clip settings, or ``None`` when its clips are off: switched off, read
    by OpenCV (no packets) unless asked for, or no evidence store to write to."""
    wanted = camera.clip if camera.clip is not None else defaults.clip
    if wanted is False or not snapshots_enabled or (wanted is None and backend != "pyav"):
        return None
    return ClipSettings(
        pre_roll_s=camera.clip_pre_roll_s if camera.clip_pre_roll_s is not None
        else defaults.clip_pre_roll_s,
        post_roll_s=camera.clip_post_roll_s if camera.clip_post_roll_s is not None
        else defaults.clip_post_roll_s,
        max_bytes=camera.clip_max_bytes if camera.clip_max_bytes is not None
        else defaults.clip_max_bytes)


def clip_problems(defaults: ClipDefaults, cameras: list[tuple[str, ClipOverrides, str]],
                  clips: ClipsConfig, snapshots_enabled: bool) -> list[str]:
    """What is wrong with the clip settings: ``cameras`` are (id, table, effective backend)."""
    problems = []
    for camera_id, camera, backend in cameras:
        wanted = camera.clip if camera.clip is not None else defaults.clip
        if wanted and backend != "pyav":
            problems.append(f'camera {camera_id!r}: clip = true needs backend = "pyav" '
                            f"(OpenCV's reader gives decoded pictures, no packets to keep)")
        if wanted and not snapshots_enabled:
            problems.append(f"camera {camera_id!r}: clip = true needs snapshots.enabled = "
                            f"true (clips are kept in the evidence store)")
        limit = camera.clip_max_bytes or defaults.clip_max_bytes
        if wanted is not False and limit > clips.max_total_bytes:
            problems.append(f"camera {camera_id!r}: clip_max_bytes ({limit}) is more than "
                            f"clips.max_total_bytes ({clips.max_total_bytes})")
    return problems
