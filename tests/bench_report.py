import json


def render(report):
    return "```\n" + json.dumps(report, indent=1, default=str) + "\n```\n"
