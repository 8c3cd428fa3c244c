"""Playbook knowledge: MITRE ATLAS, OWASP ML Top 10, NIST SP 800-61r3 phases, regulatory clocks."""
