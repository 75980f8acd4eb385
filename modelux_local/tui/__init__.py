"""The terminal UI (Textual). The only room that imports textual; it reads modelux_local through
`tui.data` alone. Imported lazily by `serve` (in a terminal) and by the `tui` command."""
