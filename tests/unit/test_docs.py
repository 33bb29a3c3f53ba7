"""The documentation keeps up with the code: every limit and every command is described."""

from __future__ import annotations

from pathlib import Path

import typer.main

from tokenmill.cli.main import app
from tokenmill.config import Limits

ROOT = Path(__file__).resolve().parents[2]


class TestDocs:
    def test_every_limit_is_documented_with_its_default(self) -> None:
        """docs/limits.md has a row per Limits field, showing the field's default."""
        text = (ROOT / "docs" / "limits.md").read_text()
        for name, field in Limits.model_fields.items():
            row = next((line for line in text.splitlines() if f"`{name}`" in line), None)
            assert row is not None, f"{name} is not in docs/limits.md"
            assert str(field.default) in row, f"the default of {name} is not in its row"

    def test_every_cli_command_is_in_the_readme(self) -> None:
        """Each command and subcommand of `tokenmill` is named in README.md."""
        readme = (ROOT / "README.md").read_text()
        group = typer.main.get_command(app)
        for name, command in group.commands.items():  # type: ignore[attr-defined]
            assert f"tokenmill {name}" in readme, f"tokenmill {name} is not in the README"
            for sub in getattr(command, "commands", {}):
                assert sub in readme, f"tokenmill {name} {sub} is not in the README"

    def test_the_readme_opens_with_the_two_commands(self) -> None:
        """The first code block installs and serves, then installs and tests."""
        readme = (ROOT / "README.md").read_text()
        block = readme.split("```")[1]
        assert "pip install -e . && tokenmill serve" in block
        assert "pip install -e '.[test]' && pytest" in block
