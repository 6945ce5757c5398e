"""The compiler researcher's workbench: `keomlir reduce`, `keomlir bench` and the page of
`keomlir explain --html` (see ARCHITECTURE.md)."""
