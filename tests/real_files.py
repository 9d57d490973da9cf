"""Real files that are not text, from our dependencies, and a real book wrapped as an HTML
page: what users find beside their books and dumps."""

from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "data" / "books" / "austen-persuasion.txt"


def real_png() -> bytes:
    import werkzeug  # tensorboard's dependency; ships its debugger's icons

    return (Path(werkzeug.__file__).parent / "debug" / "shared" / "console.png").read_bytes()


def real_html() -> bytes:
    import tensorboard

    return (Path(tensorboard.__file__).parent / "plugins" / "projector" / "tf_projector_plugin"
            / "projector_binary.html").read_bytes()


def book_in_html() -> bytes:
    paragraphs = BOOK.read_text(encoding="utf-8").split("\n\n")[:200]
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<!DOCTYPE html>\n<html><head><title>Persuasion</title></head><body>\n{body}\n</body></html>\n".encode()
