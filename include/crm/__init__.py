"""What the CRM pushes send: labels, change detection, batches, signatures and the outbox."""
