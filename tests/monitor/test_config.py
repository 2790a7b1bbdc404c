import dataclasses

import pytest

from mmsa.common.errors import ConfigError
from mmsa.monitor.config import MonitorConfig, MqttConfig, load_config, node_id, parse_host_port
from tests.conftest import REPO


def test_default_toml_documents_every_key_with_the_code_defaults():
    assert load_config(REPO / "configs" / "monitor" / "default.toml") == MonitorConfig()


@pytest.mark.parametrize("name", ["whole-clip.toml", "mqtt-tls.toml"])
def test_shipped_presets_load(name):
    cfg = load_config(REPO / "configs" / "monitor" / name)
    assert isinstance(cfg, MonitorConfig)


def test_partial_toml_overrides_only_its_keys(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[segmenter]\nmax_window_s = 6\nhop_s = 3.0\n[mqtt]\nhost = "broker"\n')
    cfg = load_config(path)
    assert cfg.segmenter.max_window_s == 6.0 and cfg.segmenter.hop_s == 3.0
    assert cfg.mqtt.host == "broker" and cfg.asr == MonitorConfig().asr


@pytest.mark.parametrize("text, message", [
    ("[segmenter]\nmax_windw_s = 6\n", "segmenter.max_windw_s: unknown key"),
    ("[asr]\nbeam_size = \"five\"\n", "asr.beam_size: expected an integer"),
    ("[segmenter]\nmode = \"always\"\n", "segmenter.mode: expected one of"),
    ("[segmenter]\nhop_s = 12.0\n", "hop_s <= max_window_s"),
    ("[nope]\nx = 1\n", "nope: unknown key"),
    ("[scorer]\nfaces_per_window = -1\n", "faces_per_window: 0"),
    ("[segmenter]\nvad_hop_ms = 10\n", "vad_hop_ms: 16 or 32"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_replace_validates_like_the_toml():
    cfg = MonitorConfig().replace("mqtt", host="h", port=1884)
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("h", 1884)
    with pytest.raises(ValueError):
        MonitorConfig().replace("segmenter", neg_threshold=0.9)
    assert dataclasses.is_dataclass(cfg)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:1883", ("127.0.0.1", 1883)), ("broker", ("broker", 0)), ("[::1]:8883", ("::1", 8883)),
    ("::1", ("::1", 0)),
])
def test_parse_host_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", [":1883", "host:abc"])
def test_parse_host_port_refuses_garbage(text):
    with pytest.raises(ConfigError):
        parse_host_port(text)


def test_node_id_is_topic_safe():
    assert node_id(MqttConfig(node_id="Living Room #2")) == "living-room-2"
    assert node_id(MqttConfig()) != ""
