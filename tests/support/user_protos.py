"""A user's own protos: a widget service whose one event type carries the given options."""

from __future__ import annotations

from pathlib import Path

WIDGET_PROTO = """\
syntax = "proto3";

package acme.widgets.v1;

import "protoevents/v1/options.proto";

// Events of the widget service.
enum WidgetEventType {
  // Not an event type.
  WIDGET_EVENT_TYPE_UNSPECIFIED = 0;
  // A widget jammed.
  WIDGET_EVENT_TYPE_JAMMED = 1 [(protoevents.v1.event) = {
%s
  }];
}
"""
GOOD_OPTIONS = """\
    severity: SEVERITY_ERROR
    category: "widget"
    description: "A widget jammed."\
"""


def write_user_protos(root: Path, options: str = GOOD_OPTIONS) -> Path:
    protos = root / "protos"
    target = protos / "acme" / "widgets" / "v1" / "widget_events.proto"
    target.parent.mkdir(parents=True)
    target.write_text(WIDGET_PROTO % options)
    return protos
