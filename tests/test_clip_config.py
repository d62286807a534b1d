"""Evidence clip settings: defaults, camera overrides, the caps, and clear refusals."""

from __future__ import annotations

import pytest

from monitor.clipconfig import ClipSettings
from monitor.config import ConfigError, config_from_mapping
from monitor.service.reload import plan_reload


def cameras(*tables: dict[str, object]) -> list[dict[str, object]]:
    return [{"id": f"cam{i}", "url": f"rtsp://10.0.0.{i}/stream", **t}
            for i, t in enumerate(tables)]


def test_on_by_default_for_packet_readers_off_for_opencv_and_overridable() -> None:
    config = config_from_mapping({
        "defaults": {"clip_pre_roll_s": 4, "clip_post_roll_s": 6},
        "cameras": cameras({}, {"backend": "opencv"}, {"clip": False},
                           {"clip_pre_roll_s": 8, "clip_max_bytes": 4 * 1024 * 1024}),
    })
    settings = [config.camera_clip(camera) for camera in config.cameras]
    assert settings == [ClipSettings(4, 6, 16 * 1024 * 1024), None, None,
                        ClipSettings(8, 6, 4 * 1024 * 1024)]


def test_no_evidence_store_means_no_clips() -> None:
    config = config_from_mapping({"snapshots": {"enabled": False}, "cameras": cameras({})})
    assert config.camera_clip(config.cameras[0]) is None


@pytest.mark.parametrize(("data", "message"), [
    ({"cameras": cameras({"backend": "opencv", "clip": True})}, 'needs backend = "pyav"'),
    ({"snapshots": {"enabled": False}, "cameras": cameras({"clip": True})},
     "needs snapshots.enabled"),
    ({"clips": {"max_total_bytes": 8 * 1024 * 1024}, "cameras": cameras({})},
     r"clip_max_bytes \(16777216\) is more than clips.max_total_bytes"),
    ({"defaults": {"clip_pre_roll_s": 0}}, "defaults.clip_pre_roll_s"),
    ({"defaults": {"clip_post_roll_s": 500}}, "defaults.clip_post_roll_s"),
    ({"cameras": cameras({"clip_max_bytes": 1000})}, r"cameras.0.clip_max_bytes"),
    ({"clips": {"max_total_bytes": 10}}, "clips.max_total_bytes"),
])
def test_bad_settings_are_refused_naming_the_problem(data: dict[str, object],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(data)


def test_a_reload_restarts_cameras_for_clip_settings_and_the_process_for_the_total() -> None:
    old = config_from_mapping({"cameras": cameras({})})
    longer = config_from_mapping({"defaults": {"clip_pre_roll_s": 9}, "cameras": cameras({})})
    assert [c.id for c in plan_reload(old, longer).restart] == ["cam0"]
    bigger = config_from_mapping({"clips": {"max_total_bytes": 512 * 1024 * 1024},
                                  "cameras": cameras({})})
    assert plan_reload(old, bigger).sections_needing_restart == ("clips",)
