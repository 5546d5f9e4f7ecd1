"""The import graph of ``lib``, read from the source (AST), never by running it.

Cache keys hash the source of exactly the modules a result depends on: the closure of what
its code imports. Editing a module then invalidates what depends on it, and nothing else.
Modules are named as Python names them (``lib.kernels.sobol``); a package is its
``__init__.py``, and a module depends on the packages that contain it, since importing it runs
them.
"""
import ast
import functools
import hashlib

from . import paths

PACKAGE = "lib"


def module_file(name: str):
    """The source file of module ``name`` (``lib.x.y`` -> ``lib/x/y.py`` or
    ``lib/x/y/__init__.py``), or None when there is no such module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = paths.LIB_DIR.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if len(parts) > 1 and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def is_module(name: str) -> bool:
    return module_file(name) is not None


def all_modules() -> list:
    """Every module of ``lib``, sorted, packages included (``lib``, ``lib.book``, ...)."""
    names = []
    for path in paths.LIB_DIR.rglob("*.py"):
        parts = (PACKAGE, *path.relative_to(paths.LIB_DIR).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def _longest_module(dotted: str):
    """The longest prefix of ``lib.a.b.c`` that is a module (``lib.a.b`` if ``c`` is a name)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if is_module(candidate):
            return candidate
    return None


def _attribute_chain(node):
    """``lib.a.b`` for the expression ``lib.a.b`` (Name and Attributes), else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(names)])
    return None


def _package_of(module: str, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    is_package = module_file(module).name == "__init__.py"
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    return ".".join(parts[:keep])


def imports_in(source: str, module: str | None = None) -> set:
    """The ``lib`` modules that ``source`` imports or uses as ``lib.<...>`` attributes.

    ``module`` is the dotted name of the module the source belongs to, for its relative
    imports; chapter code (``module=None``) has absolute imports only.
    """
    found, chains = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                base = _package_of(module, node.level)
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            # `from P import m` needs the submodule P.m; `from P import name`, P itself
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.add(submodule if is_module(submodule) else origin)
        elif isinstance(node, ast.Attribute) and module is None:
            chain = _attribute_chain(node)
            if chain and chain.startswith(PACKAGE + "."):
                chains.add(chain)
    # `lib.a.b.f` is also walked as `lib.a.b` and `lib.a`: keep the longest chains only
    found |= {c for c in chains if not any(o.startswith(c + ".") for o in chains)}
    return {m for m in map(_longest_module, found) if m is not None and m != module}


@functools.lru_cache(maxsize=None)
def _imports_of_source(module: str, source: str) -> frozenset:
    return frozenset(imports_in(source, module))


def imports_of(module: str) -> frozenset:
    """The modules that ``module``'s own source imports (its packages not included)."""
    return _imports_of_source(module, module_file(module).read_text())


def parents(module: str) -> set:
    """The packages containing ``module``: ``lib.a.b`` -> {``lib``, ``lib.a``}."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def closure(modules) -> set:
    """``modules`` and everything they import, directly or not, with their packages."""
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if not is_module(name):
            raise ValueError(f"{name!r} is not a module of {PACKAGE!r}")
        seen.add(name)
        todo += list(imports_of(name)) + sorted(parents(name))
    return seen


def source_digest(modules) -> str:
    """SHA-256 over the names and sources of ``modules`` (sorted)."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        digest.update(name.encode() + b"\0" + module_file(name).read_bytes() + b"\0")
    return digest.hexdigest()


def closure_digest(*modules: str) -> str:
    """:func:`source_digest` of the :func:`closure` of ``modules``: a cache key's code part."""
    return source_digest(closure(modules))
