"""The `network-expansion` command."""

import json
import subprocess
import sys

from conftest import REPO

from network_expansion.cli import main


def test_info_prints_the_card_the_architecture_and_the_parameter_count(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012" in out
    assert "81.5 top-1 (vit-base)" in out
    assert "depth             12" in out
    assert "parameters      86,568,425" in out


def test_info_json_is_machine_readable(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 86_568_425
    assert info["architecture"]["width"] == 768
    assert info["card"]["model_name"] == "NetworkExpansion"


def test_check_card_exits_1_and_lists_problems_of_the_published_card(capsys):
    assert main(["check-card", str(REPO / "assets/published/NetworkExpansion.md")]) == 1
    out = capsys.readouterr().out
    assert "7 problem(s)" in out and "missing required field 'repo-link'" in out


def test_the_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "network_expansion.cli", "check-card",
                          str(REPO / "assets/noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012.md")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "valid" in out.stdout
