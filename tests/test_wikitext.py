"""The wikitext cleaner and the sentence splitter, on real snippets of the sample dump."""

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path


from bertflow.pipelines.sentences import split_sentences
from bertflow.pipelines.wikitext import strip_nested, to_paragraphs

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "wikipedia" / "enwiki-sample.xml.bz2"
MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|<ref|&nbsp;|thumb\||File:|Image:|Category:|\{\||\|\}|^\s*\|")


def test_lead_of_anarchism():
    # The first lines of the Anarchism article: hatnote templates, bold, links with and
    # without labels, <ref>s holding quotes, external links and cite templates.
    text = (
        "{{Redirect2|Anarchist|Anarchists|the fictional character|Anarchist (comics)}}\n"
        "{{pp-move-indef}}\n{{Use British English|date=January 2014}}\n{{Anarchism sidebar}}\n"
        "'''Anarchism''' is a [[political philosophy]] that advocates [[self-governance|self-governed]] "
        "societies based on voluntary institutions.<ref>&quot;ANARCHISM, a social philosophy&quot; "
        "George Woodcock.</ref><ref name=\"iaf-ifa.org\"/> Anarchism considers the "
        "[[state (polity)|state]] to be undesirable, unnecessary, and harmful.<ref name=\"definition\">\n"
        "{{cite journal |last=Malatesta|first=Errico|title=Towards Anarchism|journal=MAN!}}</ref>"
    )
    assert to_paragraphs(text) == [
        "Anarchism is a political philosophy that advocates self-governed societies based on "
        "voluntary institutions. Anarchism considers the state to be undesirable, unnecessary, and harmful."
    ]


def test_file_with_links_in_caption_goes_whole():
    text = (
        "[[File:WilliamGodwin.jpg|left|thumb|upright|[[William Godwin]], \"the first to formulate "
        "the political and economical conceptions of anarchism\".<ref name=\"EB1910\"/>]]\n"
        "Godwin is generally regarded as the founder of the school of thought known as "
        "'philosophical anarchism'. He argued in ''[[Political Justice]]'' (1793)<ref name=\"godwinsep\" /> "
        "that government has an inherently malevolent influence on society."
    )
    (paragraph,) = to_paragraphs(text)
    assert paragraph.startswith("Godwin is generally regarded")
    assert "He argued in Political Justice (1793) that government" in paragraph
    assert "thumb" not in paragraph and "William Godwin" not in paragraph


def test_caption_with_single_brackets():
    text = ("[[Image:Saturated C4 hydrocarbons ball-and-stick.png|thumb|right| [[n-butane|''n''-butane]] "
            "and bicyclo[1.1.0]butane.]]\nAlkanes are saturated.")
    assert to_paragraphs(text) == ["Alkanes are saturated."]


def test_tables_templates_nested_and_stray():
    text = (
        "{{Infobox country\n|name = Afghanistan\n|languages = {{hlist|[[Pashto]]|[[Dari language|Dari]]}}\n"
        "|table = {| class=\"wikitable\"\n|-\n| a || b\n|}\n}}\n"
        "'''Afghanistan''' {{IPAc-en|audio=En-us-Afghanistan.ogg|æ|f}} ([[Pashto language|Pashto]]/"
        "[[Dari language|Dari]]: {{nq|افغانستان}}, ''Afġānistān'') is a [[landlocked country]].}}\n\n"
        "{| class=\"wikitable\"\n! Year !! Population\n|-\n| 1979 || {{nts|13051358}}\n|}\n"
        "It is bordered by [[Pakistan]] in the south and east."
    )
    assert to_paragraphs(text) == [
        "Afghanistan (Pashto/Dari:, Afġānistān) is a landlocked country.",
        "It is bordered by Pakistan in the south and east.",
    ]


def test_unclosed_template_drops_only_its_paragraph():
    text = "{{Infobox broken\n|name = x\n\nFirst real paragraph.\n\nSecond one."
    assert to_paragraphs(text) == ["First real paragraph.", "Second one."]
    assert strip_nested("a }} b\n|}\nc") == "a  b\n\nc"


def test_headings_lists_categories_interlanguage_entities():
    text = (
        "__NOTOC__\nAlbedo is the [[diffuse reflection|reflected]] fraction.<!-- a comment\nover lines -->\n"
        "== Terrestrial albedo ==\nAlbedos of typical materials range from up to 0.9 for fresh snow&nbsp;to about "
        "0.04 for charcoal &ndash; one of the darkest.\n"
        "* a list item\n# numbered\n: indented\n"
        "=== Snow ===\nSnow albedo is highly variable.<ref>Paper</ref>\n"
        "== See also ==\nThis section is only links to [[Other]] pages.\n"
        "== External links ==\n* [http://example.com Example]\n"
        "[[Category:Climate forcing]]\n[[fr:Albédo]]\n[[de:Albedo]]"
    )
    assert to_paragraphs(text) == [
        "Albedo is the reflected fraction.",
        "Albedos of typical materials range from up to 0.9 for fresh snow to about 0.04 for charcoal – one of the darkest.",
        "Snow albedo is highly variable.",
    ]


def test_link_forms():
    text = ("[[dog]]s and [[Paris, Texas|]] and [[:Category:Anarchism|the category]] and "
            "[[wikt:anarchy]] and [[#History|history]] and [http://x.org a site] and [http://y.org].")
    assert to_paragraphs(text) == [
        "dogs and Paris and the category and anarchy and history and a site and."
    ]


def test_sentences_split_inside_paragraphs_only():
    assert split_sentences("Mr. Smith went to Washington. He arrived on Jan. 5, 1990.") == [
        "Mr. Smith went to Washington.", "He arrived on Jan. 5, 1990."]
    assert split_sentences("") == []


def test_paragraphs_stay_apart_when_tidied_together():
    # The tidying runs over a page's paragraphs at once: nothing may join two of them.
    text = "First one (\n\n) second, ;\n\nthird &#10; line\u00a0 with\tspaces ( ; born 1920) ok ,"
    assert to_paragraphs(text) == ["First one (", ") second,", "third line with spaces (born 1920) ok,"]


def test_a_pipe_that_begins_a_word_is_markup():
    # From the sample's Afghanistan article: a template argument's pipe left in the source.
    text = "The name ''Afghānistān'' ([[Pashto]] |افغانستان) is old. Keep a | b, sm|rg}sar and \\| too."
    assert to_paragraphs(text) == ["The name Afghānistān (Pashto افغانستان) is old. Keep a | b, sm|rg}sar and \\| too."]


def test_sentence_splitter_equals_blingfires_own_wrapper():
    import blingfire

    from bertflow.pipelines.sentences import _text_to_sentences

    root = ET.fromstring(bz2.open(SAMPLE).read())
    ns = "{http://www.mediawiki.org/xml/export-0.10/}"
    texts = [p for page in root.iter(ns + "page") for p in to_paragraphs(page.findtext(f"{ns}revision/{ns}text") or "")]
    # and: nothing, one letter, more than the first buffer holds, short after long
    texts += ["", "x", "Dr. Who left. " * 20_000, "é" * 70_000, "Ok. Done."]
    assert len(texts) > 4000
    assert [_text_to_sentences(t) for t in texts] == [blingfire.text_to_sentences(t) for t in texts]


def test_whole_sample_is_clean_prose():
    # Every article of the sample dump: almost no markup left, most of the text kept.
    root = ET.fromstring(bz2.open(SAMPLE).read())
    ns = "{http://www.mediawiki.org/xml/export-0.10/}"
    sentences, words = [], 0
    for page in root.iter(ns + "page"):
        if page.find(ns + "redirect") is not None or page.findtext(ns + "ns") != "0":
            continue
        for paragraph in to_paragraphs(page.findtext(f"{ns}revision/{ns}text") or ""):
            for s in split_sentences(paragraph):
                sentences.append(s)
                words += len(s.split())
    residue = [s for s in sentences if MARKUP.search(s)]
    assert words > 350_000
    assert len(residue) / len(sentences) < 0.001, residue[:10]
