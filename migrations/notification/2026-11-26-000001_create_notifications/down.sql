DROP TABLE notifications;
DROP TABLE webhook_subscriptions;
DROP TABLE recipients;
