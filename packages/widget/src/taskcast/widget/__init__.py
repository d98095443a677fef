"""Live task view for server-rendered pages: Jinja2 templates, a Starlette router and a
small script (with vendored htmx) that follows a task's Taskcast SSE stream.

Typical use, in the same app as the Taskcast API::

    from taskcast.widget import TaskcastWidget, WidgetConfig

    widget = TaskcastWidget(WidgetConfig(taskcast_url="/taskcast"), engine=engine)
    widget.mount(app)                    # GET /widget/tasks/{task_id}, /widget/static/...
    widget.install(templates.env)        # {{ taskcast_widget(task_id) }} in your templates
"""

from ._view import LogEntry, ProgressView, TaskView, build_view, load_view
from ._widget import TaskcastWidget, WidgetConfig, widget_environment, widget_router

__version__ = "0.1.0"

__all__ = [
    "LogEntry",
    "ProgressView",
    "TaskView",
    "TaskcastWidget",
    "WidgetConfig",
    "build_view",
    "load_view",
    "widget_environment",
    "widget_router",
]
