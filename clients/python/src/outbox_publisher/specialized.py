"""The seed's specialized publishers, verbatim: the same nine methods, arguments, event fields,
topics and keys (``schemas/`` is the catalogue they match). They take any ``EventPublisher``;
give them an ``OutboxEventPublisher`` and their events are written in the caller's transaction.
"""

import time
from typing import Any, Dict, List, Optional

from .publisher import EventPublisher


class MCPEventPublisher:
    """Publisher for MCP-specific events."""

    def __init__(self, event_publisher: EventPublisher):
        """
        Initialize MCP event publisher.

        Args:
            event_publisher: Base event publisher
        """
        self.publisher = event_publisher
        self.topic_prefix = "mcp"

    async def publish_conversation_created(
        self,
        conversation_id: str,
        user_id: str,
        agent_id: str,
        metadata: Optional[Dict[str, Any]] = None
    ) -> None:
        """
        Publish conversation created event.

        Args:
            conversation_id: Conversation ID
            user_id: User ID
            agent_id: Agent ID
            metadata: Optional metadata
        """
        event = {
            "type": "conversation_created",
            "conversation_id": conversation_id,
            "user_id": user_id,
            "agent_id": agent_id,
            "timestamp": int(time.time() * 1000),
            "metadata": metadata or {}
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.conversations",
            key=conversation_id,
            value=event
        )

    async def publish_message_added(
        self,
        conversation_id: str,
        message_id: str,
        content: str,
        role: str
    ) -> None:
        """
        Publish message added event.

        Args:
            conversation_id: Conversation ID
            message_id: Message ID
            content: Message content
            role: Message role (user or assistant)
        """
        event = {
            "type": "message_added",
            "conversation_id": conversation_id,
            "message_id": message_id,
            "content": content,
            "role": role,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.messages",
            key=message_id,
            value=event
        )

    async def publish_response_generated(
        self,
        conversation_id: str,
        message_id: str,
        model: str,
        tokens: int,
        latency: float
    ) -> None:
        """
        Publish response generated event.

        Args:
            conversation_id: Conversation ID
            message_id: Message ID
            model: Model used
            tokens: Number of tokens generated
            latency: Generation latency in seconds
        """
        event = {
            "type": "response_generated",
            "conversation_id": conversation_id,
            "message_id": message_id,
            "model": model,
            "tokens": tokens,
            "latency": latency,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.responses",
            key=message_id,
            value=event
        )

    async def publish_capability_invoked(
        self,
        conversation_id: str,
        capability_id: str,
        capability_name: str,
        parameters: Dict[str, Any]
    ) -> None:
        """
        Publish capability invoked event.

        Args:
            conversation_id: Conversation ID
            capability_id: Capability invocation ID
            capability_name: Capability name
            parameters: Capability parameters
        """
        event = {
            "type": "capability_invoked",
            "conversation_id": conversation_id,
            "capability_id": capability_id,
            "capability_name": capability_name,
            "parameters": parameters,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.capabilities",
            key=capability_id,
            value=event
        )

    async def publish_capability_completed(
        self,
        conversation_id: str,
        capability_id: str,
        capability_name: str,
        result: Dict[str, Any],
        duration: float
    ) -> None:
        """
        Publish capability completed event.

        Args:
            conversation_id: Conversation ID
            capability_id: Capability invocation ID
            capability_name: Capability name
            result: Capability result
            duration: Execution duration in seconds
        """
        event = {
            "type": "capability_completed",
            "conversation_id": conversation_id,
            "capability_id": capability_id,
            "capability_name": capability_name,
            "result": result,
            "duration": duration,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.capabilities",
            key=capability_id,
            value=event
        )


class EvolutionEventPublisher:
    """Publisher for evolution engine events."""

    def __init__(self, event_publisher: EventPublisher):
        """
        Initialize evolution event publisher.

        Args:
            event_publisher: Base event publisher
        """
        self.publisher = event_publisher
        self.topic_prefix = "evolution"

    async def publish_evolution_proposal_created(
        self,
        proposal_id: str,
        agent_id: str,
        target_system: str,
        proposal_content: Dict[str, Any]
    ) -> None:
        """
        Publish evolution proposal created event.

        Args:
            proposal_id: Proposal ID
            agent_id: Agent ID
            target_system: Target system for evolution
            proposal_content: Proposal content
        """
        event = {
            "type": "evolution_proposal_created",
            "proposal_id": proposal_id,
            "agent_id": agent_id,
            "target_system": target_system,
            "proposal_content": proposal_content,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.proposals",
            key=proposal_id,
            value=event
        )

    async def publish_evolution_validation_started(
        self,
        proposal_id: str,
        validation_id: str,
        validation_steps: List[Dict[str, Any]]
    ) -> None:
        """
        Publish evolution validation started event.

        Args:
            proposal_id: Proposal ID
            validation_id: Validation ID
            validation_steps: Validation steps to be performed
        """
        event = {
            "type": "evolution_validation_started",
            "proposal_id": proposal_id,
            "validation_id": validation_id,
            "validation_steps": validation_steps,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.validations",
            key=validation_id,
            value=event
        )

    async def publish_evolution_validation_completed(
        self,
        proposal_id: str,
        validation_id: str,
        result: Dict[str, Any],
        is_valid: bool
    ) -> None:
        """
        Publish evolution validation completed event.

        Args:
            proposal_id: Proposal ID
            validation_id: Validation ID
            result: Validation result
            is_valid: Whether the proposal is valid
        """
        event = {
            "type": "evolution_validation_completed",
            "proposal_id": proposal_id,
            "validation_id": validation_id,
            "result": result,
            "is_valid": is_valid,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.validations",
            key=validation_id,
            value=event
        )

    async def publish_evolution_applied(
        self,
        proposal_id: str,
        implementation_id: str,
        changes: List[Dict[str, Any]],
        affected_systems: List[str]
    ) -> None:
        """
        Publish evolution applied event.

        Args:
            proposal_id: Proposal ID
            implementation_id: Implementation ID
            changes: List of changes made
            affected_systems: List of affected systems
        """
        event = {
            "type": "evolution_applied",
            "proposal_id": proposal_id,
            "implementation_id": implementation_id,
            "changes": changes,
            "affected_systems": affected_systems,
            "timestamp": int(time.time() * 1000)
        }

        await self.publisher.publish(
            topic=f"{self.topic_prefix}.implementations",
            key=implementation_id,
            value=event
        )
