"""What a configuration reload (SIGHUP) changes: a pure diff of two configurations.

:func:`plan_reload` compares the running configuration with the new one and returns a
:class:`ReloadPlan`; the :class:`~monitor.service.supervisor.Supervisor` carries it out (stops,
starts and restarts camera pipelines, logs each step). No I/O here, so the rules are tested
with two configurations and nothing else:

* a camera enabled in the new configuration and not running is added;
* a running camera no longer enabled (or gone) is removed;
* a running camera whose section changed, or every running camera when ``[defaults]``,
  ``[schedules]`` or ``[verification]`` changed (interval, hazards, tracker settings, site
  rules, zoom-in verification and so on apply to all), is restarted;
* the other running cameras are kept untouched (their alerts, readers and trackers live on);
* ``[vlm]``, ``[mqtt]``, ``[telemetry]``, ``[logging]``, ``[console]``, ``[notify]``,
  ``[clips]`` (the packet rings' total budget), ``[health]``, ``[snapshots]`` and
  ``state_dir`` are only read at start: a change there is reported as needing a restart of
  the process, and not applied; so is a changed schedule that a notification channel's
  quiet hours follow (the cameras follow it at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.config import CameraConfig, MonitorConfig

RESTART_SECTIONS = ("vlm", "mqtt", "telemetry", "logging", "console", "notify", "clips",
                    "health", "snapshots", "state_dir")
"""Sections (and the top-level ``state_dir``) the running process cannot change (clients,
servers, handlers built at start; the health trackers keep problems that have started; the
evidence store and the outboxes stay where they were opened)."""
QUIET_HOURS = "schedules"
"""Reported as needing a restart when a schedule that a notification channel's quiet hours
follow changed: cameras follow the new schedule at once, the channels (built at start) do
not."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What to do to go from one configuration to the next (camera ids in config order)."""

    add: tuple[CameraConfig, ...] = ()
    """New cameras (their new sections), in the new configuration's order."""
    remove: tuple[str, ...] = ()
    restart: tuple[CameraConfig, ...] = ()
    """Running cameras to rebuild with these (new) sections."""
    keep: tuple[str, ...] = ()
    sections_needing_restart: tuple[str, ...] = ()
    """Top-level sections that changed but only apply after a restart of the process."""

    @property
    def changes_cameras(self) -> bool:
        """Whether any camera pipeline starts, stops or restarts."""
        return bool(self.add or self.remove or self.restart)


def running_cameras(config: MonitorConfig) -> dict[str, CameraConfig]:
    """The cameras a configuration runs: the enabled ones, by id, in configuration order."""
    return {camera.id: camera for camera in config.cameras if camera.enabled}


def plan_reload(old: MonitorConfig, new: MonitorConfig) -> ReloadPlan:
    """The steps from ``old`` (the running configuration) to ``new``; see the module doc."""
    running = running_cameras(old)
    wanted = running_cameras(new)
    # [schedules] and [verification] apply to every camera's pipeline like [defaults].
    defaults_changed = (old.defaults != new.defaults or old.schedules != new.schedules
                        or old.verification != new.verification)
    remove: list[str] = []
    restart: list[CameraConfig] = []
    keep: list[str] = []
    for camera_id, camera in running.items():
        if camera_id not in wanted:
            remove.append(camera_id)
        elif defaults_changed or wanted[camera_id] != camera:
            restart.append(wanted[camera_id])
        else:
            keep.append(camera_id)
    return ReloadPlan(
        add=tuple(c for camera_id, c in wanted.items() if camera_id not in running),
        remove=tuple(remove), restart=tuple(restart), keep=tuple(keep),
        sections_needing_restart=tuple(
            section for section in RESTART_SECTIONS
            if getattr(old, section) != getattr(new, section)) + _quiet_hours_changed(old, new),
    )


def _quiet_hours_changed(old: MonitorConfig, new: MonitorConfig) -> tuple[str, ...]:
    followed = {channel.schedule for channel in old.notify if channel.schedule}
    changed = any(old.schedules.get(name) != new.schedules.get(name) for name in followed)
    return (QUIET_HOURS,) if changed else ()
