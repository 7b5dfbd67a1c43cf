"""Hardened XML: every XML body the gateway reads goes through here.

lxml parses with entity resolution, DTD loading and network access off,
and any document that carries a DOCTYPE is refused outright, so entity
expansion ("billion laughs") and external entities never get a chance.
"""

import re
from typing import Optional

from lxml import etree

NS_DAV = "DAV:"
NS_CALDAV = "urn:ietf:params:xml:ns:caldav"
NS_CS = "http://calendarserver.org/ns/"
NSMAP = {"D": NS_DAV, "C": NS_CALDAV, "CS": NS_CS}


class XMLError(ValueError):
    """The body is not acceptable XML; the message says why."""


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True,
                          load_dtd=False, dtd_validation=False,
                          huge_tree=False, remove_comments=True,
                          remove_pis=True)


#: Characters XML 1.0 cannot carry (controls, NUL, lone surrogates).
_NOT_XML_CHAR = re.compile(
    "[^\u0009\u000A\u000D\u0020-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def text(value: str) -> str:
    """``value`` made safe to put in XML: what XML cannot hold becomes
    U+FFFD.  Reasons quoted from requests and peers may hold anything."""
    return _NOT_XML_CHAR.sub("\ufffd", value)


def clark(prefixed: str) -> str:
    """``C:time-range`` -> ``{urn:ietf:params:xml:ns:caldav}time-range``."""
    prefix, _, local = prefixed.partition(":")
    return "{%s}%s" % (NSMAP[prefix], local)


def parse(body: bytes, max_bytes: int = 1 << 20) -> etree._Element:
    """Parse a request or peer body; raise XMLError if unsafe or bad."""
    if not body:
        raise XMLError("empty XML body")
    if len(body) > max_bytes:
        raise XMLError("XML body larger than %d bytes" % max_bytes)
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise XMLError("DOCTYPE and entity declarations are not allowed")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as e:
        raise XMLError("malformed XML: %s" % e) from None
    if root.getroottree().docinfo.doctype:
        raise XMLError("DOCTYPE is not allowed")
    return root


def tostring(element: etree._Element, declaration: bool = True) -> bytes:
    return etree.tostring(element, xml_declaration=declaration,
                          encoding="utf-8")


def element(prefixed: str, content: Optional[str] = None,
            parent: Optional[etree._Element] = None) -> etree._Element:
    """Make (and optionally attach) an element named ``D:x``/``C:x``."""
    if parent is None:
        el = etree.Element(clark(prefixed), nsmap={"D": NS_DAV,
                                                   "C": NS_CALDAV})
    else:
        el = etree.SubElement(parent, clark(prefixed))
    if content is not None:
        el.text = text(content)
    return el
