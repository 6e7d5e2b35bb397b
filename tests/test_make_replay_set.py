"""``training/make_replay_set.py`` records the command that makes a replay set again."""

from __future__ import annotations

import json
import shlex

from training.make_replay_set import OUTPUT, made_by, parse_args


def test_the_shipped_replay_set_records_the_command_that_remakes_it():
    recorded = json.loads(OUTPUT.with_suffix(".json").read_text(encoding="utf-8"))["made_by"]
    argv = shlex.split(recorded)[3:]  # after "python -m training.make_replay_set"
    assert made_by(parse_args(argv)) == recorded
    assert "--model" not in recorded and "--source" not in recorded  # the defaults: the bundled model, every source


def test_another_model_and_source_are_part_of_the_command():
    args = parse_args(["--model", "out/v1_default", "--source", "dsb2018_train", "--per-group", "fluorescence=2"])
    command = made_by(args)
    assert "--model out/v1_default" in command and "--source dsb2018_train" in command
    assert "--output" not in command
    assert made_by(parse_args(shlex.split(command)[3:])) == command
