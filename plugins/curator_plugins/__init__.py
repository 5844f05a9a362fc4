"""curator's built-in scorers. Each module is a plugin registered through the ``curator`` entry-point
group, written only against the public API in ``curator`` — exactly as a third-party plugin is."""
