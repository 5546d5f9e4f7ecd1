"""Sphinx extension: emit each <script> of a page once.

sphinx-thebe and sphinx-togglebutton register their inline configuration scripts twice under
Sphinx 7.4 (once with filename None, once with ''), so browsers report "Identifier
'THEBE_JS_URL' has already been declared" on every page.
"""


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
