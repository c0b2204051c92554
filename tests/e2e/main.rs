mod discord;
mod telegram;
