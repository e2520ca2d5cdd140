"""The README's code examples run as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_block_example_builds_a_model(capsys):
    (example,) = [b for b in python_blocks() if "register_block" in b]
    exec(compile(example, str(README), "exec"), {})
    assert int(capsys.readouterr().out.strip()) > 0
