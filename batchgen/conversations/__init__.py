"""What happens in the chats: updates received (updates, poll), chats discovered and migrated
(chats), the conversation kept (history), the prompt built from it (prompting) and the behaviour
rules that turn it into queue items (behaviour). May import work, models, telegram, state and
core.
"""
