//! Intake decisions: from a typed event to what gets stored. A pure function of the
//! event and the settings, so every rule (commands, the edit rule, bots never trigger,
//! the label) is testable without HTTP or Redis.

use time::OffsetDateTime;

use crate::commands::{self, Command, ParseError, sanitize_untrusted};
use crate::event::{CommentAction, CommentEvent, Event, LabelEvent};
use crate::job::{Job, TriggerKind};
use crate::task::{Origin, ReplyKind, Task};

/// Settings intake reads on every delivery.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    pub trigger: String,
    pub label: String,
    /// Logins that are Repobox itself (besides accounts the forge marks as bots).
    pub own_logins: Vec<String>,
}

/// What intake does with an event.
#[derive(Debug)]
pub enum Decision {
    /// Nothing to store; the reason is logged and returned to the forge.
    Ignore(&'static str),
    /// Store a new queued job and hand it to the acknowledger.
    Job(Box<Job>),
    /// Store a task for the acknowledger (help, did-you-mean, cancel, retry).
    Task(Box<Task>),
}

pub fn decide(event: &Event, settings: &IntakeSettings, now: OffsetDateTime) -> Decision {
    match event {
        Event::Comment(c) => decide_comment(c, settings, now),
        Event::Labeled(l) => decide_label(l, settings, now),
        Event::Installation(_) => Decision::Ignore("installation events need no job"),
    }
}

fn is_own_or_bot(login: &str, is_bot: bool, settings: &IntakeSettings) -> bool {
    is_bot
        || settings
            .own_logins
            .iter()
            .any(|own| own.eq_ignore_ascii_case(login))
}

fn decide_comment(c: &CommentEvent, settings: &IntakeSettings, now: OffsetDateTime) -> Decision {
    if is_own_or_bot(&c.author.login, c.author.is_bot, settings) {
        return Decision::Ignore("comments by bots never trigger");
    }
    let parsed = match c.action {
        CommentAction::Created => commands::parse_command(&c.body, &settings.trigger),
        CommentAction::Edited => match &c.previous_body {
            Some(previous) => commands::parse_edited_command(previous, &c.body, &settings.trigger),
            None => return Decision::Ignore("edited comment without its previous body"),
        },
        CommentAction::Deleted => return Decision::Ignore("deleted comments never trigger"),
    };
    let origin = || Origin {
        repo: c.repo.clone(),
        thread: c.thread,
        thread_title: c.thread_title.clone(),
        comment: Some(c.comment),
        requester: c.author.clone(),
    };
    let task = match parsed {
        None => return Decision::Ignore("no command"),
        Some(Err(ParseError::NearMiss { word, suggestion })) => Task::Reply {
            origin: origin(),
            reply: ReplyKind::NearMiss {
                word,
                suggestion: suggestion.to_owned(),
            },
        },
        Some(Ok(Command::Help)) => Task::Reply {
            origin: origin(),
            reply: ReplyKind::Help,
        },
        Some(Ok(Command::Cancel)) => Task::Cancel { origin: origin() },
        Some(Ok(Command::Retry)) => Task::Retry { origin: origin() },
        Some(Ok(Command::Run { instructions })) => {
            let mut job = Job::new(
                c.repo.clone(),
                c.thread,
                c.thread_title.clone(),
                TriggerKind::Comment,
                c.author.clone(),
                sanitize_untrusted(&instructions).trim().to_owned(),
                now,
            );
            job.trigger_comment = Some(c.comment);
            job.review = c.review.clone();
            return Decision::Job(Box::new(job));
        }
    };
    Decision::Task(Box::new(task))
}

fn decide_label(l: &LabelEvent, settings: &IntakeSettings, now: OffsetDateTime) -> Decision {
    if !l
        .added
        .iter()
        .any(|name| name.eq_ignore_ascii_case(&settings.label))
    {
        return Decision::Ignore("label is not the trigger label");
    }
    if is_own_or_bot(&l.actor.login, l.actor.is_bot, settings) {
        return Decision::Ignore("labels added by bots never trigger");
    }
    Decision::Job(Box::new(Job::new(
        l.repo.clone(),
        l.thread,
        l.thread_title.clone(),
        TriggerKind::Label,
        l.actor.clone(),
        String::new(),
        now,
    )))
}
