"""README, card, setup.cfg, .ci/run and code say the same things."""

import configparser
import re

from conftest import REPO

from network_expansion import model_card


def _readme():
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command_exactly():
    commands = re.findall(r"```bash\n(.*?)\n```", _readme(), flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_names_the_cards_uid_alias_and_path():
    card, readme = model_card(), _readme()
    assert card.uid in readme and card.short_alias in readme
    assert f"assets/{card.uid}.md" in readme


def test_setup_cfg_declares_the_mindspore_range_and_numpy_the_readme_promises():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requires = config["options"]["install_requires"]
    assert "mindspore>=2.7.0,<2.11" in requires and "numpy>=1.26,<2" in requires
    assert "MindSpore 2.7.0 to 2.10.0" in _readme() and "NumPy is held below 2" in _readme()
    assert "bash .ci/oldest-mindspore" in _readme() and (REPO / ".ci" / "oldest-mindspore").is_file()
    assert "network-expansion = network_expansion.cli:main" in config["options.entry_points"]["console_scripts"]
