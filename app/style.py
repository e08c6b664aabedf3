"""The dashboard's CSS (inlined in the page and in exports: no asset folder to ship)."""

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; color: #1f2937; background: #f6f7f9; }
.wb-header { background: #1f2937; color: white; padding: 12px 28px; display: flex; align-items: baseline; gap: 24px; flex-wrap: wrap; }
.wb-header h1 { margin: 0; font-size: 20px; }
.wb-header a { color: #e5e7eb; margin-right: 16px; text-decoration: none; }
.wb-header a:hover { text-decoration: underline; }
.wb-header .meta { font-size: 12px; opacity: 0.8; }
main, #page { padding: 8px 28px 40px 28px; }
section { background: white; border: 1px solid #e5e7eb; border-radius: 6px; padding: 10px 18px; margin: 14px 0; }
h2 { font-size: 18px; margin: 8px 0; } h3 { font-size: 15px; margin: 12px 0 6px 0; } h4 { font-size: 13px; margin: 10px 0 4px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 10px; }
.wb-table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
.wb-table th, .wb-table td { border-bottom: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; }
.wb-table th { background: #f3f4f6; } .wb-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #6b7280; font-size: 12.5px; }
.notice { padding: 8px 12px; border-radius: 4px; margin: 8px 0; font-size: 13.5px; }
.notice-warn { background: #fef3c7; border: 1px solid #f59e0b; }
.notice-error { background: #fee2e2; border: 1px solid #ef4444; }
.notice-info { background: #e0f2fe; border: 1px solid #38bdf8; }
.notice .hint { font-size: 12.5px; color: #374151; }
.controls { display: flex; flex-wrap: wrap; gap: 12px 18px; align-items: flex-end; margin: 8px 0; }
.controls label { font-size: 12px; color: #4b5563; display: block; margin-bottom: 2px; }
.controls .field { min-width: 140px; }
textarea.wb-prompt { width: 100%; min-height: 70px; font-family: ui-monospace, monospace; font-size: 12.5px; }
button.wb-button { background: #2563eb; color: white; border: none; border-radius: 4px; padding: 6px 14px; cursor: pointer; font-size: 13px; }
button.wb-button:hover { background: #1d4ed8; }
button.wb-secondary { background: #e5e7eb; color: #1f2937; }
.progress-outer { width: 320px; height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; display: inline-block; vertical-align: middle; }
.progress-inner { height: 100%; background: #2563eb; transition: width 0.2s; }
.progress-text { font-size: 12.5px; margin-left: 10px; color: #374151; }
.token-view { font-family: ui-monospace, monospace; font-size: 12.5px; line-height: 1.9; background: white; padding: 8px; border: 1px solid #e5e7eb; border-radius: 4px; max-height: 360px; overflow: auto; }
.tok { padding: 1px 2px; margin: 0 1px; border-radius: 2px; white-space: pre; }
.tok-query { outline: 2px solid #111827; }
.tok-hidden { color: #9ca3af; }
.generated { font-family: ui-monospace, monospace; font-size: 12.5px; background: #f9fafb; padding: 6px 8px; border: 1px solid #e5e7eb; border-radius: 4px; white-space: pre-wrap; }
.export-result { font-size: 12.5px; margin-left: 10px; }
.wb-graph { min-height: 240px; }
"""
