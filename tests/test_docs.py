"""What the docs name exists: every ``configs/...yaml`` path and every ``python -m freeze_embed...`` module named in
README.md, docs/, the configs' comments and the package's docstrings; every relative link (and its ``#anchor``, by
GitHub's heading slugs) of README.md and docs/ resolves and every docs page is reachable from the README; every
``--config`` file of a command block exists, and the README/docs ``train.py`` commands' ``--config`` files parse."""
import ast
import importlib.util
import re
import shlex
from pathlib import Path

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
PAGES = sorted(name for name in DOCS if name.endswith(".md"))


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


def readme_train_commands(doc: str = "README.md") -> list[list[str]]:
    """Each ``python train.py`` command of a page's bash blocks with --config, as arguments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOCS[doc], re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            if "python train.py" in line and "--config" in line:
                commands.append(shlex.split(line[line.index("python train.py"):].split("&&")[0])[2:])
    return commands


def _configs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--config"]


COMMANDS = [c for c in readme_train_commands() if all(p.startswith("configs/") for p in _configs(c))]
DOC_COMMANDS = [c for page in PAGES for c in readme_train_commands(page)
                if all(p.startswith("configs/") for p in _configs(c))]


def test_readme_commands_are_found():
    assert len(COMMANDS) >= 5
    assert ["configs/demo.yaml", "configs/method/adamw.yaml"] in [_configs(c) for c in COMMANDS]


@pytest.mark.slow
@pytest.mark.parametrize("configs", sorted({tuple(_configs(c)) for c in DOC_COMMANDS}), ids=" + ".join)
def test_readme_command_configs_parse(configs):
    """Commands whose --config files are all in the repo (not a run's output such as DIR/strategy.yaml)."""
    from freeze_embed.run.config import parse
    assert parse(list(configs)).get("model") is not None


# --- links, anchors, reachability, command blocks -----------------------------------------------------------------

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL_LINK = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def split_code(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the prose, with fenced blocks blanked out; each fenced block as (language, dedented body))."""
    prose, blocks, fence, lang, body, indent = [], [], None, "", [], 0
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, lang, body, indent = match.group(1), match.group(2), [], len(line) - len(line.lstrip())
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append((lang, "\n".join(b[indent:] if b[:indent].isspace() else b.lstrip() for b in body)))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, duplicates numbered as GitHub numbers them (-1, -2, ...)."""
    seen, found = {}, set()
    for line in split_code(text)[0].splitlines():
        if match := re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return found


def links(text: str) -> list[str]:
    """The relative link targets of a page's prose (not its code blocks or inline code)."""
    prose = re.sub(r"(`+)(?:(?!\1).)+?\1", "", split_code(text)[0], flags=re.DOTALL)
    return [t for t in LINK.findall(prose) if not EXTERNAL_LINK.match(t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text()):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def test_the_link_check_reads_what_it_should(tmp_path):
    assert slug("Memory per method (Table 4)") == "memory-per-method-table-4"
    assert slug("The paper's `embed`, [blocks](x.md) & head") == "the-papers-embed-blocks--head"
    assert anchors("# A\n```bash\n# not a heading\n```\n## A\n") == {"a", "a-1"}
    page = "[x](a.md#b) `[y](no.md)` ![i](f.png) [w](https://x.org)\n```\n[z](code.md)\n```\n[two\nlines](c.md)"
    assert links(page) == ["a.md#b", "f.png", "c.md"]
    (tmp_path / "a.md").write_text("# Title\n## Some part\n")
    page = tmp_path / "p.md"
    page.write_text("[ok](a.md#some-part) [self](#here) [gone](b.md) [bad](a.md#other)\n# Here\n")
    assert broken_links(page) == ["b.md (no such file)", "a.md#other (no heading #other in a.md)"]


@pytest.mark.parametrize("doc", PAGES)
def test_every_relative_link_resolves(doc):
    broken = broken_links(ROOT / doc)
    assert not broken, f"{doc} links to what does not exist: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or not page.is_file():
            continue
        seen.add(page)
        todo += [(page.parent / t.partition("#")[0]).resolve() for t in links(page.read_text())
                 if t.partition("#")[0].endswith(".md")]
    unreachable = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/**/*.md") if p.resolve() not in seen)
    assert not unreachable, f"no chain of links from README.md reaches {unreachable}"


def command_configs(text: str) -> list[str]:
    """Every ``--config X`` of a page's bash blocks, with ``V="..."`` (the page's) and a block's ``for v in ...``
    expanded; X that names a placeholder (``...``, ``<...>``) or a variable left unset is left out."""
    found, page_values = [], _assignments(text)
    for lang, body in split_code(text)[1]:
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        values = {**page_values, **_assignments(body)}
        for name, value in re.findall(r"\bfor (\w+) in ([^;\n]+);", body):
            words = [w for v in value.split() for w in (values.get(v[1:], [v]) if v.startswith("$") else [v])]
            if not any("$" in w for w in words):
                values[name] = words
        for path in re.findall(r"--config[ =]([^\s;|&)]+)", body.replace("\\\n", " ")):
            path = path.split("@")[0]
            names = re.findall(r"\$\{?(\w+)\}?", path)
            if "..." in path or "<" in path or any(n not in values for n in names):
                continue
            expanded = [path]
            for name in names:
                expanded = [p.replace(f"${{{name}}}", v).replace(f"${name}", v) for p in expanded for v in values[name]]
            found += expanded
    return found


def _assignments(text: str) -> dict[str, list[str]]:
    return {name: value.split() for name, value in re.findall(r"\b(\w+)=[\"']([^\"']*)[\"']", text)}


def test_the_command_scan_reads_what_it_should():
    text = ("```bash\nfor m in sgd adamw; do python train.py fit --config configs/method/$m.yaml \\\n"
            "  --config configs/demo.yaml@train; done\npython train.py fit --config ... --config <yours>.yaml\n```\n"
            "```\n--config not/a/command.yaml\n```\n"
            "  ```bash\n  B=\"x y\"\n  for b in $B; do --config c/$b.yaml; done\n  ```\n")
    assert command_configs(text) == ["configs/method/sgd.yaml", "configs/method/adamw.yaml", "configs/demo.yaml",
                                     "c/x.yaml", "c/y.yaml"]


# A command's --config that a command before it writes (a run's backbone.yaml, a search's strategy.yaml).
OUTPUTS = ("runs/", "sweeps/")


@pytest.mark.parametrize("doc", PAGES)
def test_every_command_config_exists(doc):
    paths = [p for p in command_configs(DOCS[doc]) if not p.startswith(OUTPUTS)]
    missing = sorted({p for p in paths if not (ROOT / p).is_file()})
    assert not missing, f"{doc}'s commands pass --config files that do not exist: {missing}"
