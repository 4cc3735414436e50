"""Both ISO assemblers pass edgekit's ISO-assembler contract."""

from __future__ import annotations

from edgekit_iso.plugin import PycdlibAssembler, XorrisoAssembler

from edgekit.testing import IsoAssemblerContract


class TestPycdlib(IsoAssemblerContract):
    backend_class = PycdlibAssembler


class TestXorriso(IsoAssemblerContract):
    backend_class = XorrisoAssembler
