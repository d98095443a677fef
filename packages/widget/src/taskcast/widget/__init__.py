"""Live task view for server-rendered pages: Jinja2 templates, a Starlette router and a
small script (with vendored htmx) that follows a task's Taskcast SSE stream.

Typical use, in the same app as the Taskcast API::

    from taskcast.widget import TaskcastWidget, WidgetConfig

    widget = TaskcastWidget(WidgetConfig(taskcast_url="/taskcast"), engine=engine)
    widget.mount(app)                    # GET /widget/tasks/{task_id}, /widget/static/...
    widget.install(templates.env)        # {{ taskcast_widget(task_id) }} in your templates
"""

from importlib.metadata import version as _dist_version

from ._view import LogEntry, ProgressView, TaskView, build_view, load_view
from ._widget import TaskcastWidget, WidgetConfig, widget_environment, widget_router

__all__ = [
    "LogEntry",
    "ProgressView",
    "TaskView",
    "TaskcastWidget",
    "WidgetConfig",
    "__version__",
    "build_view",
    "load_view",
    "widget_environment",
    "widget_router",
]

__version__: str = _dist_version("taskcast-widget")
"""The installed version (every taskcast package of a release has the same one)."""
