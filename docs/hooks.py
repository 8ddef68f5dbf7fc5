"""MkDocs hook: an underscore never starts emphasis.

The pages and the docstrings write subscripts with underscores (‖A‖_∞, b_x, λ_pf, e_y); plain
Markdown would read the text between two of them as italics. Emphasis uses asterisks here.
"""

from markdown.extensions import Extension


class _NoUnderscoreEmphasis(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Markdown's API)
        if hasattr(md, "delimiters"):  # Markdown ≥ 3.11: one delimiter processor
            md.delimiters.remove("_")
        elif "em_strong2" in md.inlinePatterns:  # earlier: a separate underscore pattern
            md.inlinePatterns.deregister("em_strong2")


def on_config(config):
    config.markdown_extensions.append(_NoUnderscoreEmphasis())
    return config
