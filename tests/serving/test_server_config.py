"""TF Serving server configs (mtlzoo.serving.server_config) and the committed deployment folder export/.

Real protos throughout: every config is written, parsed back with text_format into the message
TF Serving parses, and compared field by field.
"""

import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml
from google.protobuf import text_format

import mtlzoo
from conftest import REPO
from mtlzoo.serving import server_config as deploy
from mtlzoo.serving.server_config import ServingConfigError

EXPORT = REPO / "export"
DEFAULT_MODEL = "kang_hard_sharing"


def fake_export(root: Path, name: str, *versions: int) -> Path:
    """``root/name/<v>/saved_model.pb`` (empty): discovery only looks at the layout."""
    for v in versions:
        (root / name / str(v)).mkdir(parents=True, exist_ok=True)
        (root / name / str(v) / "saved_model.pb").touch()
    return root / name


def policy_of(config, index=0):
    return config.model_config_list.config[index].model_version_policy


# ---------------------------------------------------------------------------------------------
# Discovery


def test_find_exports_follows_tf_serving_layout(tmp_path):
    fake_export(tmp_path, "b_model", 1, 3)
    fake_export(tmp_path, "a_model", 2)
    (tmp_path / "no_pb" / "1").mkdir(parents=True)                    # a version without a SavedModel
    fake_export(tmp_path, "not_versions", 1)
    os.rename(tmp_path / "not_versions" / "1", tmp_path / "not_versions" / "v1")  # not an integer
    fake_export(tmp_path, ".hidden", 1)                                # e.g. an export being written
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / ".1.abc.tmp").mkdir()                      # atomic_path's staging dir
    (tmp_path / "partial" / ".1.abc.tmp" / "saved_model.pb").touch()
    (tmp_path / "models.config").write_text("")                        # files at the root are ignored

    found = deploy.find_exports(tmp_path)
    assert list(found) == ["a_model", "b_model"]
    assert found["b_model"] == tmp_path / "b_model"


def test_find_exports_errors_name_the_root_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        deploy.find_exports(tmp_path / "nope")
    (tmp_path / "empty_model" / "1").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"No exported models under .*NAME/<integer version>/saved_model\.pb"):
        deploy.find_exports(tmp_path)


def test_real_export_is_found_and_configured_with_absolute_path(tmp_path):
    model = mtlzoo.create_model("hard_sharing", [mtlzoo.Task("y", "regression")], {"features": (3,)},
                                shared_units=[4])
    version_dir = mtlzoo.export_saved_model(model, tmp_path / "models" / "tiny")
    assert deploy.find_exports(tmp_path / "models") == {"tiny": tmp_path / "models" / "tiny"}

    out = deploy.write_model_config(tmp_path / "models", tmp_path / "models.config")
    (model_config,) = deploy.read_model_config(out).model_config_list.config
    assert model_config.base_path == str(version_dir.parent.resolve())
    assert Path(model_config.base_path).is_absolute()
    assert model_config.name == "tiny" and model_config.model_platform == "tensorflow"


# ---------------------------------------------------------------------------------------------
# models.config


@pytest.mark.parametrize(
    "policy, check",
    [
        ({}, lambda p: p.WhichOneof("policy_choice") == "latest" and p.latest.num_versions == 1),
        ({"version_policy": "latest", "num_versions": 2}, lambda p: p.latest.num_versions == 2),
        ({"version_policy": "all"}, lambda p: p.WhichOneof("policy_choice") == "all"),
        ({"version_policy": "specific", "versions": [3, 1]}, lambda p: list(p.specific.versions) == [1, 3]),
        ({"version_policy": "specific", "versions": [1, 3], "labels": {"stable": 1, "canary": 3}},
         lambda p: list(p.specific.versions) == [1, 3]),
    ],
    ids=["default", "latest-2", "all", "specific", "specific-labels"],
)
def test_version_policies_round_trip(tmp_path, policy, check):
    fake_export(tmp_path / "models", "m1", 1, 3)
    fake_export(tmp_path / "models", "m2", 1, 3)
    out = deploy.write_model_config(tmp_path / "models", tmp_path / "out" / "models.config",
                                    base_path_prefix="/models", **policy)
    text = out.read_text()
    assert text.startswith("#")  # the header is a comment TF Serving skips
    config = deploy.read_model_config(out)
    assert config == text_format.Parse(text, deploy.ModelServerConfig())
    assert config.WhichOneof("config") == "model_config_list"
    assert [c.name for c in config.model_config_list.config] == ["m1", "m2"]
    for i, model in enumerate(config.model_config_list.config):
        assert check(policy_of(config, i))
        assert dict(model.version_labels) == policy.get("labels", {})
    # Nothing but the config lands beside it (the temporary file was renamed, not left behind).
    assert sorted(p.name for p in out.parent.iterdir()) == ["models.config"]


def test_all_policy_is_written_as_an_empty_message():
    config = deploy.model_server_config({"m": "/models/m"}, version_policy="all")
    assert re.search(r"model_version_policy \{\s*all \{\s*\}\s*\}", text_format.MessageToString(config))


@pytest.mark.parametrize(
    "policy, message",
    [
        ({"labels": {"stable": 1}}, "need the 'specific' version policy"),
        ({"version_policy": "all", "labels": {"stable": 1}}, "need the 'specific' version policy"),
        ({"version_policy": "specific", "versions": [1], "labels": {"canary": 2}}, "not one of the served versions"),
        ({"version_policy": "specific", "versions": [1], "labels": {"can ary": 1}}, "Invalid version label"),
        ({"version_policy": "specific", "versions": [1], "labels": {"a/b": 1}}, "Invalid version label"),
        ({"version_policy": "specific"}, "needs versions"),
        ({"version_policy": "specific", "versions": []}, "non-empty list of positive integers"),
        ({"version_policy": "specific", "versions": [0]}, "invalid: \\[0\\]"),
        ({"version_policy": "specific", "versions": "1,2"}, "needs versions"),
        ({"version_policy": "latest", "versions": [1]}, "'specific' policy only"),
        ({"version_policy": "all", "num_versions": 2}, "'latest' policy only"),
        ({"num_versions": 0}, "positive integer"),
        ({"version_policy": "newest"}, "must be one of \\['latest', 'all', 'specific'\\]"),
    ],
)
def test_invalid_policies_are_refused(policy, message):
    with pytest.raises(ValueError, match=message):
        deploy.model_server_config({"m": "/models/m"}, **policy)


@pytest.mark.parametrize("name", ["", ".", "..", "two words", "tab\tname", "a/b", "model:v1", None])
def test_bad_model_names_are_refused(name):
    with pytest.raises(ServingConfigError, match="Invalid model name"):
        deploy.model_server_config({name: "/models/x"})


def test_empty_models_and_base_paths_are_refused():
    with pytest.raises(ServingConfigError, match="non-empty mapping"):
        deploy.model_server_config({})
    with pytest.raises(ServingConfigError, match="base_path of model 'm'"):
        deploy.model_server_config({"m": ""})


def test_bad_exported_name_fails_before_writing(tmp_path):
    fake_export(tmp_path / "models", "bad name", 1)
    with pytest.raises(ServingConfigError, match="Invalid model name 'bad name'"):
        deploy.write_model_config(tmp_path / "models", tmp_path / "models.config")
    assert not (tmp_path / "models.config").exists()


def test_base_path_prefix_or_absolute(tmp_path):
    fake_export(tmp_path / "models", "m", 1)
    for prefix, expected in [("/models", "/models/m"), ("/models/", "/models/m"), ("gs://bucket/exports", "gs://bucket/exports/m"),
                             (None, str((tmp_path / "models" / "m").resolve()))]:
        out = deploy.write_model_config(tmp_path / "models", tmp_path / "models.config", base_path_prefix=prefix)
        assert deploy.read_model_config(out).model_config_list.config[0].base_path == expected
    with pytest.raises(ServingConfigError, match="base_path_prefix"):
        deploy.write_model_config(tmp_path / "models", tmp_path / "models.config", base_path_prefix=" ")


def test_specific_versions_must_exist_for_every_model(tmp_path):
    fake_export(tmp_path / "models", "a", 1, 2)
    fake_export(tmp_path / "models", "b", 1)
    with pytest.raises(ServingConfigError, match=r"Model 'b' has no version\(s\) \[2\]"):
        deploy.write_model_config(tmp_path / "models", tmp_path / "models.config",
                                  version_policy="specific", versions=[1, 2])
    assert not (tmp_path / "models.config").exists()


def test_read_model_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'm' bse_path: '/x' } }\n")
    with pytest.raises(ServingConfigError, match=re.escape(repr(str(bad))) + ".*ModelServerConfig.*bse_path"):
        deploy.read_model_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.config"):
        deploy.read_model_config(tmp_path / "missing.config")


def test_write_text_proto_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / "models.config"
    out.write_text("old")
    with pytest.raises(ServingConfigError):
        deploy.write_text_proto(deploy.monitoring_config(), out, header="not a comment")
    assert out.read_text() == "old"


# ---------------------------------------------------------------------------------------------
# Batching and monitoring helpers


def test_batching_parameters_validation():
    params = deploy.batching_parameters(max_batch_size=32, allowed_batch_sizes=[8, 16, 32])
    assert list(params.allowed_batch_sizes) == [8, 16, 32]
    assert text_format.Parse(text_format.MessageToString(params), deploy.BatchingParameters()) == params
    for bad in ([8, 16], [16, 8, 32], [0, 32]):
        with pytest.raises(ServingConfigError, match="allowed_batch_sizes"):
            deploy.batching_parameters(max_batch_size=32, allowed_batch_sizes=bad)
    with pytest.raises(ServingConfigError, match="num_batch_threads must be an integer >= 1"):
        deploy.batching_parameters(num_batch_threads=0)
    assert deploy.batching_parameters(batch_timeout_micros=0).batch_timeout_micros.value == 0


def test_monitoring_config_validation():
    assert deploy.monitoring_config("/metrics").prometheus_config.path == "/metrics"
    for bad in ("metrics", "/a b", ""):
        with pytest.raises(ServingConfigError, match="Prometheus path"):
            deploy.monitoring_config(bad)


def test_mirrored_messages_match_tf_serving_names_and_numbers():
    # The wire format and text format depend on these exactly (upstream .proto definitions).
    fields = {f.name: (f.number, f.type) for f in deploy.BatchingParameters.DESCRIPTOR.fields}
    assert deploy.BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert {k: n for k, (n, _) in fields.items() if n <= 7} == {
        "max_batch_size": 1, "batch_timeout_micros": 2, "max_enqueued_batches": 3, "num_batch_threads": 4,
        "thread_pool_name": 5, "allowed_batch_sizes": 6, "pad_variable_length_inputs": 7,
    }
    wrappers = {f.name: f.message_type.full_name for f in deploy.BatchingParameters.DESCRIPTOR.fields if f.message_type}
    assert wrappers["max_batch_size"] == "google.protobuf.Int64Value"
    assert wrappers["thread_pool_name"] == "google.protobuf.StringValue"
    monitoring = deploy.MonitoringConfig.DESCRIPTOR
    assert monitoring.full_name == "tensorflow.serving.MonitoringConfig"
    assert monitoring.fields_by_name["prometheus_config"].number == 1
    prometheus = monitoring.fields_by_name["prometheus_config"].message_type
    assert {f.name: f.number for f in prometheus.fields} == {"enable": 1, "path": 2}


# ---------------------------------------------------------------------------------------------
# The committed deployment folder


def test_committed_models_config_is_what_the_code_generates(tmp_path):
    fake_export(tmp_path / "models", DEFAULT_MODEL, 1)
    generated = deploy.write_model_config(tmp_path / "models", tmp_path / "models.config", base_path_prefix="/models")
    committed = EXPORT / "models.config"
    if os.environ.get("MTLZOO_REGENERATE"):
        committed.write_text(generated.read_text())
    assert committed.read_text() == generated.read_text(), (
        "export/models.config is stale; rerun with MTLZOO_REGENERATE=1 to rewrite it"
    )
    (model,) = deploy.read_model_config(committed).model_config_list.config
    assert (model.name, model.base_path) == (DEFAULT_MODEL, f"/models/{DEFAULT_MODEL}")
    assert model.model_version_policy.latest.num_versions == 1


def test_committed_batching_parameters_parse_with_the_documented_values():
    from mtlzoo.cli import WARMUP_EXAMPLES

    params = deploy.read_text_proto(EXPORT / "batching_parameters.txt", deploy.BatchingParameters)
    assert params == deploy.batching_parameters()  # the helper's defaults are the committed file
    assert params.max_batch_size.value == 64 and params.batch_timeout_micros.value == 2000
    assert params.num_batch_threads.value == 4 and params.max_enqueued_batches.value == 4
    assert params.pad_variable_length_inputs is False
    assert params.HasField("max_batch_size")
    # Warmup requests go through the batcher: a bigger one than max_batch_size fails the load.
    assert params.max_batch_size.value >= WARMUP_EXAMPLES
    if params.allowed_batch_sizes:
        assert params.allowed_batch_sizes[-1] == params.max_batch_size.value
    readme = (EXPORT / "README.md").read_text()
    assert "batches of up to 64 examples, a 2 ms" in readme and "4 batch threads" in readme


def test_committed_monitoring_config_enables_prometheus():
    config = deploy.read_text_proto(EXPORT / "monitoring.config", deploy.MonitoringConfig)
    assert config == deploy.monitoring_config()
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == deploy.PROMETHEUS_PATH == "/monitoring/prometheus/metrics"


def compose_service(name):
    return yaml.safe_load((EXPORT / "docker-compose.yml").read_text())["services"][name]


def host_path(container_path: str, volumes: list[str]) -> Path | None:
    """The file in export/ that ``container_path`` is inside the container, through the mounts."""
    target = PurePosixPath(container_path)
    for volume in volumes:
        source, mount, *_ = volume.split(":")
        if target == PurePosixPath(mount) or PurePosixPath(mount) in target.parents:
            return (EXPORT / source / target.relative_to(mount)).resolve()
    return None


def test_compose_serving_mounts_every_config_its_flags_name():
    serving = compose_service("serving")
    assert serving["image"].startswith("tensorflow/serving:")
    assert {"8500:8500", "8501:8501"} <= set(serving["ports"])
    volumes = serving["volumes"]
    assert "./models:/models:ro" in volumes
    flags = dict(flag.removeprefix("--").split("=", 1) for flag in serving["command"])
    assert flags["enable_batching"] == "true" and flags["model_config_file_poll_wait_seconds"] == "60"
    assert (flags["rest_api_port"], flags["port"]) == ("8501", "8500")
    files = {
        "model_config_file": "models.config",
        "batching_parameters_file": "batching_parameters.txt",
        "monitoring_config_file": "monitoring.config",
    }
    for flag, name in files.items():
        resolved = host_path(flags[flag], volumes)
        assert resolved == (EXPORT / name).resolve(), f"--{flag}={flags[flag]} is not export/{name} in the container"
        assert resolved.is_file()
    # Every mount but the models folder (created by the first export) exists in the checkout.
    for volume in volumes:
        assert volume.startswith("./models:") or (EXPORT / volume.split(":")[0]).exists(), volume
    # The model base paths in models.config lie under the models mount.
    for model in deploy.read_model_config(EXPORT / "models.config").model_config_list.config:
        assert host_path(model.base_path, volumes) == (EXPORT / "models" / model.name).resolve()


def test_prometheus_scrapes_the_monitoring_path_on_the_rest_port():
    prometheus = compose_service("prometheus")
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    scrape = yaml.safe_load((EXPORT / "prometheus.yml").read_text())["scrape_configs"]
    path = deploy.read_text_proto(EXPORT / "monitoring.config", deploy.MonitoringConfig).prometheus_config.path
    (job,) = [j for j in scrape if j.get("metrics_path") == path]
    assert job["static_configs"][0]["targets"] == ["serving:8501"]


def test_readme_documents_the_serving_config_flags_and_commands():
    readme = (EXPORT / "README.md").read_text()
    for text in ["--out", "--base-path-prefix", "--version-policy latest\\|all\\|specific", "--num-versions",
                 "--versions 1,2", "--label stable=1", "docker compose -f export/docker-compose.yml up",
                 "mtlzoo export runs/kang export/models/kang_hard_sharing", "python export/answer_request.py",
                 "saved_model_cli show --dir export/models/kang_hard_sharing/1 --all",
                 "/v1/models/kang_hard_sharing:predict", "/v1/models/kang_hard_sharing/metadata"]:
        assert text in readme, text
    # The models.config shown in the README is the committed one.
    shown = re.search(r"```\n(model_config_list \{.*?)```", readme, re.S).group(1)
    assert text_format.Parse(shown, deploy.ModelServerConfig()) == deploy.read_model_config(EXPORT / "models.config")
