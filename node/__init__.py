"""Composition: the one place above `pipeline/` (plumbing) and `stages/` (actors) that wires them
into processes (`node.topology`), plus the operator's entry points (`node.cli`) and the product's
load generator (`node.loadtest`)."""
