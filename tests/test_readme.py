"""The README's set-up commands are the ones CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up\s+```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a Set up block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_install_command_is_what_ci_runs():
    ci = ROOT / ".ci" / "run"
    if not ci.exists():  # running against the installed wheel, outside the checkout
        import pytest
        pytest.skip("no checkout")
    install, main_job = _setup_block()
    assert install.startswith("pip install") and install in ci.read_text()
    assert main_job.startswith("ebgen ")
    assert "python -m pytest -q" in (ROOT / "README.md").read_text()
    assert "python -m pytest -q" in ci.read_text()


def test_readme_extras_never_combine_cpu_and_gpu_runtimes():
    install = _setup_block()[0] if (ROOT / "README.md").exists() else ""
    assert not ("cpu" in install and "gpu" in install)
