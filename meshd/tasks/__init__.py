"""The task router: providers by capability, TASK_REQUEST/TASK_RESPONSE, receipts."""
