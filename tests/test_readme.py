"""Every command in the README parses with the real parser of the code it names.

The commands run for real elsewhere: the synthetic world in tests/test_synthetic.py, `eval all`
in tests/test_eval_cli.py, the seed's training commands in tests/test_train_run.py, classify /
segment in tests/test_apps.py, download in tests/test_models_hub.py, the demo in tests/test_demo.py.
"""
import re
import shlex
from pathlib import Path

import pytest

from farslip.apps import build_classify_parser, build_segment_parser
from farslip.synth.world import build_parser as synth_parser
from farslip.demo import build_parser as demo_parser
from farslip.eval.cli import build_parser as eval_parser
from farslip.eval.seed import seed_parser
from farslip.cli import build_download_parser as download_parser
from farslip.train.args import build_parser as train_parser

ROOT = Path(__file__).resolve().parent.parent
PARSERS = {
    "train": train_parser, "eval": eval_parser, "synth": synth_parser, "download": download_parser,
    "classify": build_classify_parser, "segment": build_segment_parser, "demo": demo_parser,
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(line)
    return commands


def parse(command: str):
    words = shlex.split(command)
    if words[0] == "farslip":
        if words[1] == "models":
            return None
        return PARSERS[words[1]]().parse_args(words[2:])
    if words[0] == "torchrun":
        module = words.index("-m")
        assert words[module + 1] in ("open_clip_train.main", "farslip.train")
        return train_parser().parse_args(words[module + 2:])
    if words[:2] == ["python", "-m"] and words[2].startswith("tests.test_"):
        task = {"tests.test_scene_classification": "classification", "tests.test_retrieval": "retrieval"}[words[2]]
        seed, rest = seed_parser(task).parse_known_args(words[3:])  # the rest goes to `farslip eval <task>`
        return eval_parser().parse_args([task, "--model", seed.model_arch, *rest])
    if words[0] in ("make", "python3", "pip"):
        return None
    raise AssertionError(f"README command not covered by this test: {command}")


COMMANDS = readme_commands()


def test_readme_has_the_two_setup_commands_first():
    assert COMMANDS[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    parse(command)  # argparse exits (SystemExit) on an unknown flag or a bad value


def test_scripts_named_in_readme_exist():
    text = (ROOT / "README.md").read_text()
    for script in re.findall(r"scripts/[\w.]+", text):
        assert (ROOT / script).exists(), script
    for doc in re.findall(r"\((docs/[\w.]+)\)", text):
        assert (ROOT / doc).exists(), doc
