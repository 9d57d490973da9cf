"""Wikitext to clean prose paragraphs, fast.

    python -m bertflow.pipelines.wikitext page.wiki      # print the paragraphs of one page's wikitext

A few linear passes of compiled regular expressions plus one nesting-aware scan,
instead of a full MediaWiki parser (mwparserfromhell builds a tree of every node and
runs at a fraction of the speed). The passes, in order:

1. comments, then elements whose content is not prose (``<ref>``, ``<math>``,
   ``<gallery>``, ...), removed with their content;
2. templates ``{{...}}`` and tables ``{|...|}``, removed by one scan that counts nesting
   (a template may hold a table and a table a template);
3. external links ``[http://x text]`` keep their text; internal links ``[[a|b]]`` keep
   their text, innermost first, so a ``[[File:...]]`` caption that holds links goes away
   whole; files, images, categories and interlanguage links are dropped;
4. bold/italic quotes, the remaining HTML tags and ``__MAGIC__`` words are dropped;
5. a line pass: headings end a paragraph (and the reference-like sections at the end of
   an article are dropped), list and indented lines are dropped as WikiExtractor does,
   blank lines end a paragraph; then HTML entities are decoded.

Paragraphs never span a heading, so sentences split later never do either.
"""

from __future__ import annotations

import argparse
import html
import re
import sys

# Elements whose content is not running text. ``ref`` needs ``\b`` so that it does not
# also match ``references``, which is listed separately.
_DROP_ELEMENTS = (
    "ref|references|math|chem|ce|score|gallery|timeline|syntaxhighlight|source|pre|"
    "imagemap|templatedata|templatestyles|noinclude|includeonly|hiero|graph|mapframe|"
    "maplink|categorytree|inputbox"
)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_DROP_ELEMENT = re.compile(
    rf"<({_DROP_ELEMENTS})\b[^>]*?(?:/>|>.*?</\1\s*>)", re.S | re.I
)
# Closing tags of dropped elements whose opening tag was lost (e.g. inside a template).
_STRAY_DROP_CLOSE = re.compile(rf"</(?:{_DROP_ELEMENTS})\s*>", re.I)
_NOWIKI = re.compile(r"</?nowiki\s*/?>", re.I)

# Templates, template parameters and tables. Table delimiters count only at the start
# of a line (``{|`` may be indented by ``:``); ``|}}`` at a line start closes a template.
_NESTING_TOKEN = re.compile(r"(\{\{)|(\}\})|^[ \t:]*(\{\|)|^[ \t]*(\|\})(?!\})", re.M)

_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:|mailto:|//)[^\s\]]*(?:[ \t]+([^\]\n]*))?\]", re.I)
# An innermost internal link: no ``[[`` or ``]]`` inside (single brackets may be). The trail (``[[dog]]s``) joins the text.
_INTERNAL_LINK = re.compile(r"\[\[((?:[^\[\]]|\[(?!\[)|\](?!\]))*)\]\]([a-z]*)")
# The common cases without a namespace, replaced by a template (no Python call per link):
# [[target|label]]trail -> label trail, [[target]]trail -> target trail.
_PLAIN_LABELLED_LINK = re.compile(r"\[\[[^\[\]|:]*\|([^\[\]|]+)\]\]([a-z]*)")
_PLAIN_LINK = re.compile(r"\[\[([^\[\]|:#]+)\]\]([a-z]*)")
_STRAY_BRACKETS = re.compile(r"\[\[|\]\]")

_DROP_NAMESPACES = frozenset({"file", "image", "media", "category"})
_INTERWIKI = frozenset(
    {"w", "wikipedia", "wikt", "wiktionary", "s", "wikisource", "q", "wikiquote", "b",
     "wikibooks", "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage", "commons",
     "meta", "m", "species", "d", "wikidata", "mw", "mediawikiwiki", "c"}
)
_LANGUAGE_CODE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple)$")

_BR = re.compile(r"<br\s*/?\s*>", re.I)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")

# The tidying patterns run over all of a page's paragraphs at once, one per line, so
# their "space" is any whitespace but the newline between paragraphs. They start with a
# fixed character or class where they can: the regex engine scans for it, rather than
# trying the whole pattern at every position.
# Punctuation left alone after its neighbours were removed: "( ; born 1920)", "()", " ,".
_EMPTY_PARENS = re.compile(r"\([^\S\n]*[,;:.–—-]*[^\S\n]*\)")
_PAREN_LEAD = re.compile(r"\([^\S\n]*[,;:][^\S\n]*")
_PAREN_TRAIL = re.compile(r"[,;:][^\S\n]*\)")  # a space before it goes with _SPACE_BEFORE_PUNCT
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.;:!?)])")  # once every run of spaces is one " "
# A pipe that begins a word ("([[Pashto]] |افغانستان)") is left of a template or table
# argument, never prose; one between letters ("sm|rg}sar") or spaces ("a | b") may be.
_STRAY_PIPE = re.compile(r"(?<!\S)\|(?=[^\s|])")
_DOUBLE_PUNCT = re.compile(r"([,;])(?:[^\S\n]*[,;])+")

# Level-2 sections at the end of an English article that hold lists of links and
# citations, not prose. Everything under them is dropped up to the next level-2 heading.
DEFAULT_DROP_SECTIONS = frozenset(
    {"see also", "references", "external links", "further reading", "notes",
     "bibliography", "sources", "footnotes", "citations", "notes and references",
     "references and notes", "works cited", "selected bibliography", "gallery"}
)


def strip_nested(text: str) -> str:
    """Remove ``{{templates}}`` and ``{|tables|}`` with everything inside them, counting
    nesting. Stray closers are dropped; an opener that is never closed drops the rest of
    its paragraph (a broken template must not swallow the article)."""
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    pos = 0  # start of text not yet copied or dropped
    stack: list[str] = []  # "t" (template) or "b" (table)
    start = 0  # where the outermost open structure began
    recoveries = 0
    scan_from = 0
    while True:
        for m in _NESTING_TOKEN.finditer(text, scan_from):
            open_t, close_t, open_b, close_b = m.groups()
            if open_t or open_b:
                if not stack:
                    out.append(text[pos : m.start()])
                    start = m.start()
                stack.append("t" if open_t else "b")
            elif stack and stack[-1] == ("t" if close_t else "b"):
                stack.pop()
                if not stack:
                    pos = m.end()
            elif not stack:  # a stray closer outside any structure
                out.append(text[pos : m.start()])
                pos = m.end()
        if not stack:
            out.append(text[pos:])
            return "".join(out)
        # Unclosed: drop to the end of the paragraph it began in, rescan what follows.
        recoveries += 1
        end = text.find("\n\n", start)
        if end < 0 or recoveries > 8:
            return "".join(out)
        stack.clear()
        pos = scan_from = end


def _link_text(m: re.Match) -> str:
    inner, trail = m.group(1), m.group(2)
    target, pipe, label = inner.partition("|")
    target = target.strip()
    visible = target.startswith(":")  # [[:Category:X]] is a link to the page, shown
    if visible:
        target = target[1:].lstrip()
    namespace, colon, rest = target.partition(":")
    namespace = namespace.strip().lower() if colon else ""
    if namespace and not visible:
        if namespace in _DROP_NAMESPACES:
            return ""
        if not pipe and _LANGUAGE_CODE.match(namespace):
            return ""  # interlanguage link: [[fr:Anarchisme]]
    if pipe:
        label = label.strip()
        if label:
            return label + trail
        # The pipe trick: [[Paris, Texas|]] shows "Paris", [[w:Foo (bar)|]] shows "Foo".
        target = rest if namespace else target
        return re.sub(r"\s*\(.*?\)$", "", target.split(",")[0]).strip() + trail
    if namespace in _INTERWIKI:
        target = rest.strip()
    return target.lstrip("#") + trail


def _groups_1_2(m: re.Match) -> str:
    # (cheaper than the template r"\1\2", which Python 3.11 expands in Python per match)
    return m[1] + m[2]


def replace_links(text: str) -> str:
    """External links keep their label; internal links their text, innermost first."""
    if "[" not in text:
        return text
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _PLAIN_LABELLED_LINK.sub(_groups_1_2, text)
    text = _PLAIN_LINK.sub(_groups_1_2, text)
    for _ in range(6):  # captions nest links a level or two deep
        if "[[" not in text:
            break
        text, n = _INTERNAL_LINK.subn(_link_text, text)
        if not n:
            break
    return _STRAY_BRACKETS.sub("", text)


def _unescape(paragraph: str) -> str:
    """HTML entities decoded; one that decodes to a newline (``&#10;``) is a space, so that
    newlines stay the boundaries between paragraphs."""
    if "&" not in paragraph:
        return paragraph
    return html.unescape(paragraph).replace("\n", " ")


def _tidy(paragraphs: str) -> str:
    """Leftovers of removed markup tidied (empty parentheses, doubled punctuation, runs of
    spaces) in paragraphs given one per line; each pattern runs once over all of them."""
    if "(" in paragraphs:
        paragraphs = _EMPTY_PARENS.sub("", paragraphs)
        paragraphs = _PAREN_LEAD.sub("(", paragraphs)
        paragraphs = _PAREN_TRAIL.sub(")", paragraphs)
    if "|" in paragraphs:
        paragraphs = _STRAY_PIPE.sub("", paragraphs)
    # every run of whitespace one space, none at the ends (str.split: C speed)
    paragraphs = "\n".join(" ".join(p.split()) for p in paragraphs.split("\n"))
    paragraphs = _SPACE_BEFORE_PUNCT.sub(_group_1, paragraphs)
    return _DOUBLE_PUNCT.sub(_group_1, paragraphs)


def _group_1(m: re.Match) -> str:
    return m[1]


def to_paragraphs(wikitext: str, drop_sections=DEFAULT_DROP_SECTIONS) -> list[str]:
    """The prose paragraphs of a page's wikitext, in order, markup removed."""
    text = _COMMENT.sub("", wikitext)
    if "<" in text:
        text = _DROP_ELEMENT.sub("", text)
        text = _STRAY_DROP_CLOSE.sub("", text)
        text = _NOWIKI.sub("", text)
    text = strip_nested(text)
    text = replace_links(text)
    if "''" in text:  # bold and italic quotes; plain replaces beat a regex here
        text = text.replace("'''''", "").replace("'''", "").replace("''", "")
    if "<" in text:
        text = _BR.sub(" ", text)
        text = _HTML_TAG.sub("", text)
    if "__" in text:
        text = _MAGIC_WORD.sub("", text)

    paragraphs: list[str] = []  # untidied
    lines: list[str] = []
    dropping = False  # inside a section of drop_sections

    def end_paragraph():
        if lines:
            paragraphs.append(_unescape(" ".join(lines)))
            lines.clear()

    for line in text.split("\n"):
        line = line.strip()
        if not line:
            end_paragraph()
            continue
        first = line[0]
        if first == "=" and line.endswith("=") and len(line) > 2:
            end_paragraph()
            level = len(line) - len(line.lstrip("="))
            if level <= 2:
                title = _tidy(_unescape(line.strip("="))).strip().lower()
                dropping = title in drop_sections
            continue
        if dropping or first in "*#:;|!{}" or line.startswith("----"):
            # Lists, indented quotes, table rows and rules: WikiExtractor drops them too.
            end_paragraph()
            continue
        lines.append(line)
    end_paragraph()
    tidied = _tidy("\n".join(paragraphs)).split("\n") if paragraphs else []
    return [p for p in map(str.strip, tidied) if any(c.isalpha() for c in p)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a file of wikitext (one page), or - for stdin")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    for paragraph in to_paragraphs(text):
        print(paragraph, end="\n\n")


if __name__ == "__main__":
    main()
