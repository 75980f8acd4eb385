"""The seed's agent.py, runnable: the block between the markers is the product page's code, verbatim.

    scripts/serve &            # the proxy on 127.0.0.1:4000 with the mock default
    python examples/agent.py   # prints the run id; then: modelux-local trace <run id>
"""
import os
import uuid

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("MODELUX_BASE_URL", "http://127.0.0.1:4000/v1"),
                api_key=os.environ.get("MODELUX_TOKEN", "not-needed-locally"))
plan_prompt = [{"role": "system", "content": "You are a research planner."},
               {"role": "user", "content": "Plan research on the cost of running LLM agents."}]
summary_prompt = [{"role": "user", "content": "Summarise the findings of the research steps."}]


def expand(plan):
    """Turns the plan into one executor prompt per step (three here)."""
    text = plan.choices[0].message.content
    return [[{"role": "user", "content": f"Step {i}: carry out this part of the plan: {text[:80]}"}] for i in (1, 2, 3)]


# --- verbatim from seed/modelux-agents.txt -------------------------------------------------
run_id = f"run_{uuid.uuid4().hex[:12]}"

def step(prompt, model="@executor"):
    return client.chat.completions.create(
        model=model,
        messages=prompt,
        extra_body={
            "mlx:tags": {"run_id": run_id, "agent": "research-v2"},
        },
    )

plan  = step(plan_prompt,    model="@planner")
tools = [step(tool_prompt)   for tool_prompt in expand(plan)]
final = step(summary_prompt, model="@summarizer")
# --- end of the verbatim part ----------------------------------------------------------------

print(run_id)
print(final.choices[0].message.content)
