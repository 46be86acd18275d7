"""Reading Markdown tables back, for tests of written reports."""


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, as {column title: cell text}."""
    table = [line for line in text.splitlines() if line.startswith("|")]
    if len(table) < 2:
        raise ValueError("no Markdown table found")
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        for line in table[2:]
    ]
