#!/usr/bin/env python3
"""Write a JSON inventory of the real API of selected Slicer/CTK classes and Python modules.

Why: test stand-ins for Slicer objects must fail on calls that the real classes lack, so
they are built from this inventory rather than from memory.  The script reads the C++
headers and Python files of pinned revisions of Slicer, CTK and SlicerPyTorch straight
from bare git repositories (`git show`; no work tree, no build).  Per class it records
public bases, Q_PROPERTYs, signals, public slots, other public methods, public enums and
PythonQt decorator methods (*PythonQtDecorators.h), with signatures normalized like
QMetaObject::normalizedSignature.  q*/ctk* public bases are inventoried too, recursively;
the chain stops at Qt classes (Q*), the first of which is recorded as "qt_base".
The C++ reader is a brace/paren-aware scanner for Qt-style headers, not a compiler:
preprocessor lines are dropped (so both #ifdef branches count) and any declaration it
cannot read is printed as a warning.
"""
import argparse
import ast
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = """
ctkCollapsibleButton ctkSliderWidget ctkDoubleSpinBox ctkDICOMDatabase ctkDICOMIndexer ctkPathLineEdit
ctkCheckableComboBox ctkRangeWidget ctkColorPickerButton ctkDirectoryButton ctkCheckBox ctkComboBox ctkMessageBox
qMRMLWidget qMRMLNodeComboBox qMRMLCheckableNodeComboBox qMRMLSubjectHierarchyComboBox qMRMLSliceWidget
qMRMLSliceView qMRMLSliceControllerWidget qMRMLViewControllerBar qMRMLAbstractViewWidget qMRMLLayoutManager
qMRMLThreeDWidget qMRMLSliderWidget qMRMLSpinBox qMRMLRangeWidget qMRMLCoordinatesWidget qMRMLColorTableComboBox
qSlicerApplication qSlicerCoreApplication qSlicerLayoutManager qSlicerWidget qSlicerAbstractModuleWidget
qSlicerAbstractModuleRepresentation qSlicerScriptedLoadableModuleWidget qSlicerMainWindow qSlicerCommandOptions
qSlicerCoreCommandOptions qSlicerModuleManager qSlicerPythonManager qSlicerIOManager qSlicerCoreIOManager
qSlicerScriptedLoadableModule qSlicerAbstractCoreModule ctkCheckablePushButton ctkDoubleSlider ctkDoubleRangeSlider
qMRMLScreenShotDialog qMRMLSortFilterProxyModel
""".split()

# (module name, repository, file, record top-level functions?, classes whose methods to record)
PYTHON = [
    ("DICOMLib.DICOMUtils", "Slicer", "Modules/Scripted/DICOMLib/DICOMUtils.py", True,
     ["TemporaryDICOMDatabase", "LoadDICOMFilesToDatabase"]),
    ("slicer.packaging", "Slicer", "Base/Python/slicer/packaging.py", True, []),
    ("SampleData", "Slicer", "Modules/Scripted/SampleData/SampleData.py", True,
     ["SampleDataLogic", "SampleDataSource"]),
    ("PyTorchUtils", "SlicerPyTorch", "PyTorchUtils/PyTorchUtils.py", False, ["PyTorchUtilsLogic"]),
]

STRIP_RE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
MACRO_RE = re.compile(r"\s*\b(?!Q_(?:INVOKABLE|SLOTS?|SIGNALS?)\b)([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b\s*")
LABEL_RE = re.compile(r"(?:(public|protected|private)\s*)?(slots|Q_SLOTS|signals|Q_SIGNALS)?")
PROP_KEYS = "READ WRITE MEMBER RESET NOTIFY REVISION DESIGNABLE SCRIPTABLE STORED USER BINDABLE CONSTANT FINAL REQUIRED"
BUILTIN = {"int", "char", "short", "long", "double", "float", "bool", "unsigned", "signed", "void", "const"}
SPECIFIERS = r"\b(virtual|static|inline|explicit|constexpr|Q_[A-Z_]+)\b"


@dataclass
class Repo:
    name: str
    gitdir: str
    rev: str
    commit: str = ""
    files: list[str] = field(default_factory=list)

    def git(self, *args: str) -> str:
        command = ["git", "--git-dir", self.gitdir, *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def load(self) -> "Repo":
        self.commit = self.git("rev-parse", f"{self.rev}^{{commit}}").strip()
        self.files = self.git("ls-tree", "-r", "--name-only", self.commit).splitlines()
        return self

    def show(self, path: str) -> str:
        return self.git("show", f"{self.commit}:{path}")

    def source_info(self) -> dict:
        return {"commit": self.commit} | ({"tag": self.rev} if self.git("tag", "--list", self.rev).strip() else {})


def match_close(text: str, i: int, pair: str = "{}") -> int:
    """Index of the bracket closing the one at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        depth += (text[j] == pair[0]) - (text[j] == pair[1])
        if depth == 0:
            return j
    raise ValueError(f"unbalanced {pair} at {i}")


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside any brackets (a `<<` shift is not one); drop empty parts."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text.replace("<<", "  ")):
        depth += (c in "(<[{") - (c in ")>]}")
        if c == sep and depth == 0:
            parts, start = parts + [text[start:i]], i + 1
    return [p.strip() for p in parts + [text[start:]] if p.strip()]


def unique(items: list) -> list:
    """Drop repeats (both #ifdef branches often declare the same member), keeping order."""
    return [item for i, item in enumerate(items) if item not in items[:i]]


def clean(source: str) -> str:
    """Drop comments, string contents and preprocessor lines."""
    source = STRIP_RE.sub(lambda m: " " if m.group()[0] == "/" else m.group()[0] * 2, source.replace("\\\n", " "))
    return re.sub(r"^\s*#.*$", "", source, flags=re.M)


def take_macros(stmt: str) -> tuple[list[tuple[str, str]], str]:
    """Split leading semicolon-less macros (Q_OBJECT, Q_PROPERTY(...), ...) off a statement."""
    macros = []
    while m := MACRO_RE.match(stmt):
        args, stmt = "", stmt[m.end():]
        if stmt.startswith("("):
            end = match_close(stmt, 0, "()")
            args, stmt = stmt[1:end], stmt[end + 1:]
        macros.append((m.group(1), args))
    return macros, stmt


def find_class(text: str, name: str) -> tuple[list[str], str] | None:
    """(public bases, body) of the definition of class `name`."""
    m = re.search(r"\b(?:class|struct)\s+(?:\w+\s+)*?" + name + r"\s*(?::([^;{()]*))?\{", text)
    if not m:
        return None
    bases = [re.sub(r"\b(public|virtual)\b|\s+", "", p) for p in split_top(m.group(1) or "") if "public" in p.split()]
    return bases, text[m.end():match_close(text, m.end() - 1)]


def split_members(body: str) -> list[tuple[str, str]]:
    """Split a class body into (section, statement); inline bodies and nested braces are skipped."""
    out, section, start, depth, i = [], "private", 0, 0, 0
    while i < len(body):
        c = body[i]
        depth += (c in "([") - (c in ")]")
        if depth == 0 and c == "{":
            end = match_close(body, i)
            if re.search(r"(\)|\bconst|\boverride|\bfinal|noexcept|Q_DECL_OVERRIDE)\s*$", body[start:i]):
                out.append((section, body[start:i]))
                start = end + 1
            i = end
        elif depth == 0 and c == ";":
            out.append((section, body[start:i]))
            start = i + 1
        elif depth == 0 and c == ":" and ":" not in (body[i - 1], body[i + 1]):
            macros, rest = take_macros(body[start:i])
            if rest.strip() and (label := LABEL_RE.fullmatch(rest.strip())):
                out.append((section, " ".join(f"{n}({a})" for n, a in macros)))
                access, kind = label.group(1) or "private", (label.group(2) or "").replace("Q_", "").lower()
                section, start = ("signals" if kind == "signals" else f"{access} {kind}".strip()), i + 1
        i += 1
    return out + [(section, body[start:])]


def normalize_type(t: str) -> str:
    """Approximate QMetaObject::normalizedSignature for one type."""
    t = re.sub(r"\s*([*&<>,()\[\]]|::)\s*", r"\1", " ".join(t.split()))
    t = re.sub(r"([*&>])const([*&])$", r"\1 const\2", t)  # "T<U> const&" lost its space above
    if m := re.fullmatch(r"const (.+[^&])&|(.+[^&]) const&", t):
        return m.group(1) or m.group(2)
    if m := re.fullmatch(r"(.+) const\*", t):
        return f"const {m.group(1)}*"
    return t[6:] if t.startswith("const ") and not re.search(r"[*&\]]", t) else t  # by-value const


def param_type(param: str) -> str:
    """Normalized type of one parameter declaration: default value and parameter name dropped."""
    param = split_top(param, "=")[0]
    if re.search(r"\(\s*\*", param):  # function pointer: drop the name inside (*name)
        return normalize_type(re.sub(r"\(\s*\*\s*\w*\s*\)", "(*)", param))
    m = re.fullmatch(r"(.*?)\s*\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\])*)", param)
    qualified_or_bare = m and (m.group(1).endswith(":") or not re.sub(r"\b(const|volatile)\b", "", m.group(1)).strip())
    if m and m.group(2) not in BUILTIN and not qualified_or_bare:
        param = m.group(1) + m.group(3)
    return normalize_type(param)


def parse_function(stmt: str, cls: str) -> tuple[str, bool, bool, bool] | None:
    """(normalized signature, static?, Q_SIGNAL/Q_SLOT-marked?, Q_INVOKABLE?) of a member function; None if not
    one.
    """
    text = " ".join(stmt.split())
    if "(" not in text or re.match(r"(friend|typedef|using|enum|class|struct|union|template|static_assert)\b", text):
        return None
    open_at = text.index("(")
    close_at = match_close(text, open_at, "()")
    head = text[:open_at]
    if "=" in head or "operator" in head or re.search(r"=\s*delete", text[close_at:]):
        return None
    static, marked = bool(re.search(r"\bstatic\b", head)), bool(re.search(r"\bQ_(SIGNAL|SLOT)\b", head))
    invokable = bool(re.search(r"\bQ_INVOKABLE\b", head))
    head = re.sub(SPECIFIERS, " ", head).strip()
    name = re.search(r"~?\w+$", head).group()
    if head == name or name.startswith("~"):  # constructor, destructor, or an unknown macro
        if name.lstrip("~") != cls:
            raise ValueError(text)
        return None
    params = [param_type(p) for p in split_top(text[open_at + 1:close_at])]
    return f"{name}({','.join(p for p in params if p != 'void')})", static, marked, invokable


def parse_property(args: str) -> tuple[str, dict]:
    words = args.split()
    k = next(i for i, w in enumerate(words) if w in PROP_KEYS.split())
    ptr, name = re.fullmatch(r"([*&]*)(\w+)", words[k - 1]).groups()
    attrs = dict(zip(words[k:], words[k + 1:], strict=False))  # each word with the next
    return name, {"type": normalize_type(" ".join(words[:k - 1]) + ptr), "read": attrs.get("READ"),
                  "write": attrs.get("WRITE"), "notify": attrs.get("NOTIFY")}


def parse_enum(stmt: str) -> tuple[str, list[str]] | None:
    m = re.match(r"\s*enum\s+(?:class\s+|struct\s+)?(\w*)[^{]*\{(.*)\}", stmt, re.S)
    return (m.group(1) or "(anonymous)", [re.match(r"\w+", v).group() for v in split_top(m.group(2))]) if m else None


def inventory_class(repo: Repo, header: str, name: str, warnings: list[str]) -> dict | None:
    if not (found := find_class(clean(repo.show(header)), name)):
        return None
    entry = {"repository": repo.name, "header": header, "bases": found[0], "properties": {},
             "signals": [], "slots": [], "methods": [], "enums": {}}
    for section, stmt in split_members(found[1]):
        macros, rest = take_macros(stmt)
        try:
            entry["properties"].update(parse_property(a) for n, a in macros if n == "Q_PROPERTY")
            add_member(entry, section, rest, name)
        except (ValueError, StopIteration, AttributeError):
            warnings.append(f"{name}: could not parse {' '.join(rest.split())[:100]!r}")
    return entry | {key: unique(entry[key]) for key in ("signals", "slots", "methods")}


def add_member(entry: dict, section: str, stmt: str, cls: str) -> None:
    if section not in ("public", "public slots", "signals"):
        return
    if enum := parse_enum(stmt):
        entry["enums"][enum[0]] = enum[1]
    elif parsed := parse_function(stmt, cls):
        signature, static, marked, invokable = parsed
        if section == "signals" or (marked and "Q_SIGNAL" in stmt):
            entry["signals"].append(signature)
        elif section == "public slots" or marked:
            entry["slots"].append(signature)
        else:
            entry["methods"].append({"signature": signature, "static": static, "invokable": invokable})


def decorators(repos: list[Repo]) -> dict[str, list[dict]]:
    """Methods that PythonQt decorator slots add in Python: static_<Class>_<name>(...), <name>(Class*, ...)."""
    found = {}
    for repo, path in ((r, f) for r in repos for f in r.files if f.endswith("PythonQtDecorators.h")):
        text = clean(repo.show(path))
        for m in re.finditer(r"\bclass\s+(\w+)\s*:\s*public\s+QObject\s*\{", text):
            for section, stmt in split_members(text[m.end():match_close(text, m.end() - 1)]):
                if section != "public slots" or not (parsed := parse_function(take_macros(stmt)[1], m.group(1))):
                    continue
                name, params = parsed[0][:-1].split("(", 1)
                params = split_top(params)
                if static := re.fullmatch(r"static_([^_]+)_(\w+)", name):
                    cls, name = static.groups()
                elif params and params[0].endswith("*") and not name.startswith(("new_", "delete_")):
                    cls, params = params[0][:-1], params[1:]
                else:
                    continue
                found.setdefault(cls, []).append({"signature": f"{name}({','.join(params)})",
                                                  "static": bool(static), "header": path})
    return {cls: unique(methods) for cls, methods in found.items()}


def qt_base(classes: dict, name: str) -> str | None:
    for base in classes.get(name, {}).get("bases", []):
        if re.match(r"Q[A-Z]", base) or (base := qt_base(classes, base)):
            return base
    return None


def inventory_classes(repos: list[Repo], warnings: list[str]) -> tuple[dict, dict]:
    """Inventory CLASSES and, recursively, their q*/ctk* public bases; ctk* headers are looked up in CTK first."""
    classes, missing, todo = {}, {}, list(CLASSES)
    while todo:
        if (name := todo.pop(0)) in classes or name in missing:
            continue
        ordered = sorted(repos, key=lambda r: (r.name == "CTK") != name.startswith("ctk"))
        location = next(((r, f) for r in ordered for f in r.files if f"/{f}".endswith(f"/{name}.h")), None)
        if not (entry := location and inventory_class(*location, name, warnings)):
            missing[name] = f"no class definition in {location[1]}" if location else f"no {name}.h header"
            continue
        classes[name] = entry | {"requested": name in CLASSES}
        todo += [b for b in entry["bases"] if re.match(r"(q|ctk)[A-Z]", b)]
    extra = decorators(repos)
    for name, entry in classes.items():
        entry |= {"qt_base": qt_base(classes, name), "python_decorators": extra.get(name, [])}
    return classes, missing


def format_arg(arg: ast.arg, default: ast.expr | None, prefix: str = "") -> str:
    text = prefix + arg.arg + (f": {ast.unparse(arg.annotation)}" if arg.annotation else "")
    return text if default is None else text + (" = " if arg.annotation else "=") + ast.unparse(default)


def signature(fn: ast.FunctionDef) -> str:
    """inspect.signature-style text of a function definition (defaults as written in the source)."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + a.defaults
    parts = [format_arg(arg, d) for arg, d in zip(positional, defaults, strict=True)]
    if a.posonlyargs:
        parts.insert(len(a.posonlyargs), "/")
    if a.vararg or a.kwonlyargs:
        parts.append(format_arg(a.vararg, None, "*") if a.vararg else "*")
    parts += [format_arg(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    parts += [format_arg(a.kwarg, None, "**")] if a.kwarg else []
    return f"({', '.join(parts)})" + (f" -> {ast.unparse(fn.returns)}" if fn.returns else "")


def inventory_python_class(cls: ast.ClassDef) -> dict:
    """Public and special (__x__) methods, @property names, and public self.* attributes set in __init__."""
    entry = {"methods": {}, "properties": [], "attributes": []}
    for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        decorator_names = [ast.unparse(d) for d in fn.decorator_list]
        private = fn.name.startswith("_") and not re.fullmatch(r"__\w+__", fn.name)
        if private or any(d.endswith((".setter", ".deleter")) for d in decorator_names):
            continue
        if "property" in decorator_names:
            entry["properties"].append(fn.name)
        else:
            entry["methods"][fn.name] = signature(fn)
        if fn.name == "__init__":
            entry["attributes"] = sorted({t.attr for t in ast.walk(fn) if isinstance(t, ast.Attribute)
                                          and isinstance(t.ctx, ast.Store) and ast.unparse(t.value) == "self"
                                          and not t.attr.startswith("_")})
    return entry


def inventory_python(repos: dict[str, Repo]) -> dict:
    result = {}
    for module, repo_name, path, with_functions, class_names in PYTHON:
        tree = ast.parse(repos[repo_name].show(path))
        where = {"file": path, "repository": repo_name}
        if with_functions:
            result[module] = where | {"functions": {f.name: signature(f) for f in tree.body
                                                    if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}}
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in class_names):
            result[f"{module}.{cls.name}"] = where | inventory_python_class(cls)
    return result


def python_packages(repo: Repo) -> dict[str, str]:
    """The Python distributions Slicer's SuperBuild installs into its Python, each at its pinned version
    (``name==version --hash=...`` lines of ``SuperBuild/External_python-*.cmake``), names normalized as pip does.
    """
    pins = {}
    for path in (f for f in repo.files if re.fullmatch(r"SuperBuild/External_python-[\w-]+\.cmake", f)):
        for name, version in re.findall(r"^\s*([A-Za-z0-9_.-]+)==([^\s;]+)\s", repo.show(path), flags=re.M):
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return dict(sorted(pins.items()))


def print_summary(inventory: dict, warnings: list[str]) -> None:
    classes = inventory["classes"]
    print(f"{len(classes)} classes ({sum(c['requested'] for c in classes.values())} requested), "
          f"{len(inventory['python'])} Python entries, {len(inventory['missing'])} missing, "
          f"{len(inventory['python_packages'])} pinned Python packages")
    for name, c in sorted(classes.items()):
        counts = " ".join(f"{key}={len(c[key]):3}" for key in ("properties", "signals", "slots", "methods", "enums"))
        print(f"  {name:37} {counts} decorators={len(c['python_decorators'])} qt_base={c['qt_base']}")
    print("".join(f"  missing {name}: {reason}\n" for name, reason in inventory["missing"].items()), end="")
    print("".join(f"  warning: {warning}\n" for warning in warnings), end="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = (("slicer", "v5.12.3"), ("ctk", "5056664a20a3d0a393bb6d91f040525581e0dcdf"), ("pytorch", "HEAD"))
    for option, rev in defaults:
        parser.add_argument(f"--{option}-git-dir", required=True, help=f"git directory of the {option} repository")
        parser.add_argument(f"--{option}-rev", default=rev, help=f"revision to read (default: {rev})")
    parser.add_argument("--output", "-o", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    repos = {r.name: r.load() for r in (Repo("Slicer", args.slicer_git_dir, args.slicer_rev),
                                        Repo("CTK", args.ctk_git_dir, args.ctk_rev),
                                        Repo("SlicerPyTorch", args.pytorch_git_dir, args.pytorch_rev))}
    warnings = []
    classes, missing = inventory_classes([repos["Slicer"], repos["CTK"]], warnings)
    inventory = {"sources": {name: r.source_info() for name, r in repos.items()}, "classes": classes,
                 "python": inventory_python(repos), "missing": missing,
                 "python_packages": python_packages(repos["Slicer"])}
    args.output.write_text(json.dumps(inventory, indent=1, sort_keys=True) + "\n")
    print_summary(inventory, warnings)


if __name__ == "__main__":
    main()
