"""The command line guesses nothing: no abbreviated options, and a "did you mean" for mistyped words (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from locbench.cli import build_parser, main


def _fails(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_parser_refuses_abbreviations():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 20  # every command and action
    assert all(p.allow_abbrev is False for p in parsers)


def test_an_abbreviated_option_is_an_error_not_a_guess(capsys):
    err = _fails(capsys, "train", "--epoch", "2", "--out", "x")
    assert "locbench train: error: unrecognized option --epoch (did you mean --epochs?)" in err


def test_a_mistyped_command_gets_a_suggestion(capsys):
    err = _fails(capsys, "trian", "--data", "x")
    assert "invalid choice: 'trian'; did you mean train?" in err
    err = _fails(capsys, "data", "inf")
    assert "locbench data: error:" in err and "did you mean info?" in err


def test_a_mistyped_choice_gets_a_suggestion(capsys):
    assert "did you mean backbones?" in _fails(capsys, "list", "backbone")


def test_unknown_options_are_named_before_missing_ones(capsys):
    # --ot is reported as itself, not as a missing --out; every unknown option is listed
    err = _fails(capsys, "train", "--epochs", "2", "--ot", "x", "--bogus-flag")
    assert "unrecognized options --ot (did you mean --out?), --bogus-flag" in err
    assert "required" not in err
    assert "(did you mean --verbose?)" in _fails(capsys, "--verbos", "list", "losses")
    assert "locbench data info: error: unrecognized option --id-cl (did you mean --id-col?)" in _fails(
        capsys, "data", "info", "--id-cl", "x", "y"
    )


def test_values_that_look_like_options_are_not_flagged(capsys):
    # negative numbers and flags run together still parse as before
    args = build_parser().parse_args(["-vq", "train", "--lr", "-1", "--out", "x", "--set", "a.b=--c"])
    assert args.verbose and args.quiet and args.lr == -1.0 and args.out == "x"
    assert main(["list", "losses"]) == 0
