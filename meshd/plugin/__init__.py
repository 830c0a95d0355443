"""The plugin API of Mesh: what an in-process plugin imports.

    from meshd.plugin import Context, Event, Plugin

docs/plugins.md is the guide. Only the names below are the public API; the
modules behind them are meshd's own.
"""

from meshd.errors import DeadlineExceeded as DeadlineExceeded
from meshd.errors import FailedPrecondition as FailedPrecondition
from meshd.errors import InvalidArgument as InvalidArgument
from meshd.errors import MeshError as MeshError
from meshd.errors import NotFound as NotFound
from meshd.errors import PeerError as PeerError
from meshd.errors import ResourceExhausted as ResourceExhausted
from meshd.errors import Unavailable as Unavailable
from meshd.plugin.api import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from meshd.plugin.api import MAX_REPORT_DETAIL as MAX_REPORT_DETAIL
from meshd.plugin.api import Context as Context
from meshd.plugin.api import Event as Event
from meshd.plugin.api import EventHandler as EventHandler
from meshd.plugin.api import LedgerReader as LedgerReader
from meshd.plugin.api import LedgerStanding as LedgerStanding
from meshd.plugin.api import Message as Message
from meshd.plugin.api import Plugin as Plugin
from meshd.plugin.api import PluginDht as PluginDht
from meshd.plugin.api import Provider as Provider
from meshd.plugin.api import ProviderRecord as ProviderRecord
from meshd.plugin.api import ReportRule as ReportRule
from meshd.plugin.api import TaskHandler as TaskHandler
from meshd.plugin.api import TaskOptions as TaskOptions
from meshd.plugin.api import TaskOutcome as TaskOutcome
from meshd.plugin.api import TaskReport as TaskReport
from meshd.plugin.api import TaskRequest as TaskRequest
from meshd.plugin.api import TaskResult as TaskResult
from meshd.plugin.api import TaskVerifier as TaskVerifier
