"""XML output through ElementTree, which escapes markup; this adds what it does not do."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

# Characters XML 1.0 cannot hold even escaped (control characters, lone surrogates). File names
# may contain them; ElementTree would write them through and produce a file no parser accepts.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    """``value`` as text XML can carry: characters it cannot are replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(value))


def sub(parent: ET.Element, tag: str, text: object = None, **attrib: object) -> ET.Element:
    """Append ``<tag attrib...>text</tag>`` to ``parent``; every value passes through ``xml_text``."""
    element = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrib.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def to_bytes(root: ET.Element, declaration: bool = True) -> bytes:
    """UTF-8 document, indented for people who open it; with an XML declaration unless
    ``declaration`` is false (Label Studio's config parser rejects one: HTTP 500)."""
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=declaration) + b"\n"
