"""What the docs name exists: every ``configs/...yaml`` path and every ``python -m freeze_embed...`` module named in
README.md, docs/, the configs' comments and the package's docstrings, and every README ``train.py`` command's
``--config`` files parse."""
import ast
import importlib.util
import re
import shlex

import pytest

from helpers import ROOT

CONFIG_PATH = re.compile(r"(?<![\w/.$<>-])configs/[A-Za-z0-9_./-]+\.yaml")
MODULE = re.compile(r"python -m (freeze_embed(?:\.[A-Za-z_]\w*)*)")
# The authors' configs (AnanyaKumar/transfer_learning), cited by their path in that repository: the text must say so.
EXTERNAL = {"configs/adaptation/": re.compile(r"the authors'|transfer_learning")}


def _docstrings(path):
    tree = ast.parse(path.read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                          ast.AsyncFunctionDef))]
    return "\n".join(d for n in nodes if (d := ast.get_docstring(n, clean=False)))


def _comments(path):
    return "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)


def documents() -> dict[str, str]:
    """{name: the text that documents}: Markdown pages whole, YAML comments, Python docstrings."""
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]}
    texts.update({p: _comments(p) for p in sorted(ROOT.glob("configs/**/*.yaml"))})
    texts.update({p: _docstrings(p) for p in sorted(ROOT.glob("freeze_embed/**/*.py"))})
    return {str(p.relative_to(ROOT)): t for p, t in texts.items()}


DOCS = documents()


def test_the_scan_reads_what_it_should():
    assert "configs/demo.yaml" in CONFIG_PATH.findall(DOCS["README.md"])
    assert "freeze_embed.tools.subtuning" in MODULE.findall(DOCS["freeze_embed/tools/subtuning/__init__.py"])
    assert "configs/pretrain/bit50_sgd.yaml" in CONFIG_PATH.findall(DOCS["configs/pretrain/bit50_patchify_sgd.yaml"]
                                                                    + " configs/pretrain/bit50_sgd.yaml")
    assert CONFIG_PATH.findall("configs/data/<dataset>.yaml configs/pretrain/$m.yaml configs/method/*.yaml") == []


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_named_config_exists(doc):
    text = DOCS[doc]
    missing = []
    for path in sorted(set(CONFIG_PATH.findall(text))):
        external = next((owner for prefix, owner in EXTERNAL.items() if path.startswith(prefix)), None)
        if external is not None:
            assert external.search(text), f"{doc} cites {path} without saying whose it is ({external.pattern})"
        elif not (ROOT / path).is_file():
            missing.append(path)
    assert not missing, f"{doc} names configs that do not exist: {missing}"


def _runnable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations:  # a package runs its __main__
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return '__name__ == "__main__"' in open(spec.origin).read()


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_named_module_runs_with_python_m(doc):
    bad = sorted(m for m in set(MODULE.findall(DOCS[doc])) if not _runnable(m))
    assert not bad, f"{doc} names `python -m` modules that do not exist or have no __main__: {bad}"


def readme_train_commands() -> list[list[str]]:
    """Each ``python train.py`` command of README.md's bash blocks with --config, as arguments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOCS["README.md"], re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            if "python train.py" in line and "--config" in line:
                commands.append(shlex.split(line[line.index("python train.py"):].split("&&")[0])[2:])
    return commands


def _configs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--config"]


COMMANDS = [c for c in readme_train_commands() if all(p.startswith("configs/") for p in _configs(c))]


def test_readme_commands_are_found():
    assert len(COMMANDS) >= 5
    assert ["configs/demo.yaml", "configs/method/adamw.yaml"] in [_configs(c) for c in COMMANDS]


@pytest.mark.slow
@pytest.mark.parametrize("configs", sorted({tuple(_configs(c)) for c in COMMANDS}), ids=" + ".join)
def test_readme_command_configs_parse(configs):
    """Commands whose --config files are all in the repo (not a run's output such as DIR/strategy.yaml)."""
    from freeze_embed.run.config import parse
    assert parse(list(configs)).get("model") is not None
