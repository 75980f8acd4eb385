"""Replay: re-run recorded runs against a candidate config (or reprice them), judge the outputs,
diff cost / latency / errors / success with confidence intervals, and promote or roll back with
an audit trail. Never imports proxy/: replays go straight to the providers, in-process.

Modules: selection (which runs), engine (live + reprice), evaluators (quality verdicts),
diff (figures + bootstrap CI), simulate (one replay end to end; its rows: storage/replays.py),
report (text), promotion (serving versions, gate, audit, rollback), progress (terminal meter).
"""
