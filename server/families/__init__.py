"""Model families: one module each, holding the family's exporters, its scorers and its output declarations.

Every module here is imported by `modeling.registry.load_families` and registers
itself there (`@register("kind")` for scorers, `@exports(Type, kind=...)` for
exporters). A family imports the shared plumbing in `modeling/` and its own
kernel module, never another family. ARCHITECTURE.md lists the steps to add one.
"""
