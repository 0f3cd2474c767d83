"""A small langgraph agent with symoe as its chat model: it answers, then checks its own
answer and answers again once if the check says it is wrong.

    python examples/agent.py "A farmer has 17 rows of 23 apple trees. How many trees?"

``SymoeChatModel`` is a LangChain chat model: each call is routed to the experts that suit
it, and the routing record comes back in the message's ``response_metadata["symoe"]``.
"""

from __future__ import annotations

import sys
from typing import TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph

from orchestrator.chat_model import SymoeChatModel


class AgentState(TypedDict):
    question: str
    answer: AIMessage
    verdict: str
    tries: int


def build_agent(llm: SymoeChatModel):  # type: ignore[no-untyped-def]
    def answer(state: AgentState) -> dict:
        return {"answer": llm.invoke([HumanMessage(state["question"])]), "tries": state.get("tries", 0) + 1}

    def check(state: AgentState) -> dict:
        verdict = llm.invoke([HumanMessage(
            f"Question: {state['question']}\nProposed answer: {state['answer'].content}\n"
            "Is the proposed answer correct? Reply with yes or no.")], answer_format="text")
        return {"verdict": "no" if "no" in str(verdict.content).lower().split()[:3] else "yes"}

    def again(state: AgentState) -> str:
        return "answer" if state["verdict"] == "no" and state["tries"] < 2 else END

    graph = StateGraph(AgentState)
    graph.add_node("answer", answer)
    graph.add_node("check", check)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", "check")
    graph.add_conditional_edges("check", again, ["answer", END])
    return graph.compile()


def main(question: str) -> None:
    llm = SymoeChatModel()
    try:
        final = build_agent(llm).invoke({"question": question, "tries": 0})
    finally:
        llm.close()
    record = final["answer"].response_metadata["symoe"]
    print("answer:", record["answer"])
    print("experts:", ", ".join(record["experts"]), "| skills:", ", ".join(record["skills"]))
    print("check:", final["verdict"], "| tries:", final["tries"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "What is 17 * 23?")
