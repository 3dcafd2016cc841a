"""``pets``'s surface, in-process: the map of commands, ``--version``, one ``--json`` flag and
the exit codes on every subcommand, one way to name the project, the output convention, the
loopback warning, the sweep hand-over, the licence."""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from petsml.cli import GROUPS, build_parser
from petsml.cli.output import emit_object, emit_rows
from petsml.testing.project import REPO
from tests.cli import run_pets


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_bare_pets_prints_the_grouped_map_and_exits_0(capsys):
    code, out, _ = run_pets([], capsys)
    assert code == 0
    code_help, out_help, _ = run_pets(["--help"], capsys)
    assert code_help == 0 and out_help == out
    commands = _subcommands()
    present = [(title, [n for n in names if n in commands]) for title, names in GROUPS]
    titles = [out.index(f"\n{title}:\n") for title, names in present if names]
    assert titles == sorted(titles), "groups out of order"
    for _, names in present:
        for name in names:
            assert f"\n  {name:<10} " in out, f"{name} missing from the map"
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and
              line.split()[0] in commands}  # fmt: skip
    assert listed == set(commands) - {"compare"}, "every command is in the map (compare: an alias)"
    assert "JSON Lines" in out and "JSON object" in out
    assert "130 interrupted" in out


def test_version_is_the_installed_package_version(capsys):
    code, out, _ = run_pets(["--version"], capsys)
    assert code == 0 and out.strip() == f"pets {metadata.version('pets-pipeline')}"


def test_misuse_exits_2(capsys):
    code, _, err = run_pets(["no-such-command"], capsys)
    assert code == 2 and "invalid choice" in err
    code, _, err = run_pets(["promote", "3"], capsys)  # --reason is required
    assert code == 2 and "--reason" in err


def test_every_subcommand_has_json_and_lists_its_exit_codes():
    for name, parser in _subcommands().items():
        if name == "sweep":  # the flow's own command line; pets takes --params and --json
            continue
        options = {flag for action in parser._actions for flag in action.option_strings}
        assert "--json" in options, f"pets {name} has no --json"
        assert "--params" in options, f"pets {name} cannot name the project with --params"
        assert "--root" not in options, f"pets {name}: the project is named by --params"
        text = parser.format_help()
        assert "exit status" in text and "  0   success" in text, f"pets {name}: no exit codes"
        assert "  2   misuse" in text, f"pets {name}"


def test_every_option_with_a_default_shows_it():
    for name, parser in _subcommands().items():
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            shown = parser._get_formatter()._expand_help(action) if action.help else ""
            assert "default" in shown, f"pets {name} {action.option_strings}: default not shown"


def test_ui_takes_no_model_options_and_servers_take_a_host():
    commands = _subcommands()
    ui = {flag for action in commands["ui"]._actions for flag in action.option_strings}
    assert not ui & {"--task", "--model-name"}, "pets ui never uses them"
    for name in ("ui", "web", "serve"):
        host = next(a for a in commands[name]._actions if "--host" in a.option_strings)
        assert host.default == "127.0.0.1"


def test_compare_is_report_and_promote_takes_an_alias():
    commands = _subcommands()
    assert commands["compare"] is commands["report"]
    version = next(a for a in commands["promote"]._actions if a.dest == "version")
    assert "challenger" in version.help


def test_export_defaults_come_from_params_yaml():
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())["compare"]
    export = _subcommands()["export"]
    helps = {a.dest: a.help for a in export._actions}
    assert (
        f"compare.calibration in the params file = {shipped['calibration']}" in helps["calibration"]
    )
    assert f"compare.latency_runs in the params file = {shipped['latency_runs']}" in helps["runs"]
    assert export.parse_args(["champion", "--out", "x"]).calibration is None  # read at run time


def test_rows_are_json_lines_and_an_answer_is_one_object(capsys):
    emit_rows([{"file": "a.jpg", "label": "pug"}, {"file": "b.jpg", "label": None}], True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["file"] for line in lines] == ["a.jpg", "b.jpg"]
    emit_object({"version": "3", "nested": {"x": [1, 2]}}, True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == {"version": "3", "nested": {"x": [1, 2]}}
    emit_object({"version": "3"}, False, lambda o: f"v{o['version']}")
    assert capsys.readouterr().out == "v3\n"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_server_beyond_loopback_warns_it_has_no_authentication(host, capsys):
    from petsml.cli.server_commands import warn_if_exposed

    warn_if_exposed(host, "the web page")
    err = capsys.readouterr().err
    assert err.startswith("WARNING: the web page listens on") and "WITHOUT authentication" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_quietly(host, capsys):
    from petsml.cli.server_commands import warn_if_exposed

    warn_if_exposed(host, "the web page")
    assert capsys.readouterr().err == ""


def test_sweep_hands_its_arguments_to_the_flow_command_line(tmp_path):
    from petsml.cli.pipeline_commands import split_sweep_args, sweep_command

    params, as_json, rest = split_sweep_args(
        ["--backbones", "a", "b", "--json", "--params", "p/params.yaml", "-S", "x=1"]
    )
    assert (params, as_json, rest) == ("p/params.yaml", True, ["--backbones", "a", "b", "-S",
                                                               "x=1"])  # fmt: skip
    command = sweep_command(tmp_path, rest)
    assert command[1:5] == ["-m", "pipelines.sweep", "--project-dir", str(tmp_path)]
    assert command[5:] == rest
    assert "--project-dir" not in sweep_command(tmp_path, ["--help"])
    # the flags are the flow's, declared once: pets adds none of its own to the sweep
    parsed = _subcommands()["sweep"].parse_args(["--max-parallel", "3", "--help"])
    assert parsed.sweep_args == ["--max-parallel", "3", "--help"]


def test_the_next_step_follows_what_status_found():
    from petsml.cli.status_command import next_step

    none = {"champion": None, "challenger": None}
    fresh = {"store": {"exists": False, "missing": []}, "stale_stages": ["download"],
             "models": none}  # fmt: skip
    assert "nothing run yet: `pets run`" in next_step(fresh)
    lost = {**fresh, "store": {"exists": True, "missing": ["run abc"]}}
    assert "lacks" in next_step(lost)
    stale = {**fresh, "store": {"exists": True, "missing": []}}
    assert next_step(stale).startswith("1 stage(s) out of date")
    one, two = {"version": "1"}, {"version": "2"}
    waiting = {**stale, "stale_stages": [], "models": {"champion": one, "challenger": two}}
    assert "pets promote challenger" in next_step(waiting)
    for challenger in (None, one):  # none, or the champion itself: nothing waits
        done = {**waiting, "models": {"champion": one, "challenger": challenger}}
        assert next_step(done).startswith("up to date")


def test_a_folder_sources_photos_resolve_inside_its_folder_only(tmp_path):
    from petsml.data.sources import photo_folder, photo_path
    from petsml.testing.project import shipped_section

    photos = tmp_path / "my-photos"
    (photos / "pug").mkdir(parents=True)
    (photos / "pug" / "1.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (photos / "pug" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    data = shipped_section("data", source="folder", folder=str(photos))
    assert photo_folder(data, tmp_path / "elsewhere") == photos.resolve()
    assert photo_path(data, "pug/1.jpg", tmp_path) == (photos / "pug" / "1.jpg").resolve()
    for escape in ("../secret.txt", "pug/../../secret.txt", str(tmp_path / "secret.txt"),
                   "pug/link.jpg", ".", ""):  # fmt: skip
        assert photo_path(data, escape, tmp_path) is None, escape
    relative = shipped_section("data", source="folder", folder="photos")
    assert photo_folder(relative, tmp_path) == (tmp_path / "photos").resolve()
    official = shipped_section("data")
    assert photo_path(official, "images/pug_1.jpg", tmp_path) == (
        tmp_path / "data" / "raw" / "images" / "pug_1.jpg"
    )


def test_the_code_is_mit_licensed_and_the_demo_photos_keep_their_attribution():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the pets-pipeline authors" in text
    assert "CC BY-SA" in (REPO / "demo" / "pets" / "ATTRIBUTION.md").read_text()
    assert Path(REPO / "LICENSE").is_file()


def test_an_error_under_json_is_an_error_line_on_stderr_and_no_answer(tmp_path, capsys):
    code, out, err = run_pets(
        ["report", "--json", "--params", str(tmp_path / "params.yaml")], capsys
    )
    assert code == 1 and out == ""
    assert err.startswith("ERROR: ") and "reports/comparison.json: missing" in err


def test_run_and_sweep_outside_a_project_name_the_missing_pipeline(tmp_path, capsys):
    for argv in (["run", "--json"], ["sweep", "--backbones", "a"]):
        code, out, err = run_pets([*argv, "--params", str(tmp_path / "params.yaml")], capsys)
        assert code == 1 and out == "", argv
        assert f"ERROR: {tmp_path}: no dvc.yaml, not a pets-pipeline project" in err, argv
