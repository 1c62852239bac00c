"""The dashboard's views; each module has ``render(ctx)`` and reads only what ``ctx`` holds."""
