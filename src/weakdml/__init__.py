"""weakdml: deep metric learning when labels are scarce (NNGK, MbDML, IAA, SPICE)."""

__version__ = "0.1.0"
