//! The two buses: in-process (embedded) and RabbitMQ (production).

pub mod amqp;
pub mod embedded;
