"""The on-commit hooks a test is about, without the audit chainer's.

Every transaction that records audit events also asks for a chainer run on commit
(workflows.audit.request_chaining, design (b) of the chain); tests that check which hooks a
service registers (enqueue a generation, send an e-mail) look at the others.
"""
from workflows import audit


def app_hooks(callbacks) -> list:
    return [cb for cb in callbacks if cb is not audit.request_chaining]
